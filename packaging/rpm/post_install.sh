# bulkhead %post: state directory, units, doctor.
STATE=/var/lib/bulkhead
mkdir -p "$STATE"
chown bulkhead:bulkhead "$STATE"
chmod 0700 "$STATE"
# The setuid launcher's host id records (launch.toml's id_registry): root's alone.
install -d -m 0755 -o root -g root /var/lib/bulkhead-launch
install -d -m 0700 -o root -g root /var/lib/bulkhead-launch/ids
[ -e "$STATE/config.toml" ] || [ -L "$STATE/config.toml" ] || \
    ln -s /etc/bulkhead/config.toml "$STATE/config.toml"
# Belt and braces: the package already carries these modes.
chown root:bulkhead /usr/libexec/bulkhead/bulkhead-launch
chmod 4750 /usr/libexec/bulkhead/bulkhead-launch
chown root:root /etc/bulkhead/launch.toml
chmod go-w /etc/bulkhead/launch.toml
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl enable --now bulkhead.socket >/dev/null 2>&1 || \
            echo "bulkhead: could not start bulkhead.socket (see: systemctl status bulkhead.socket)" >&2
    else
        systemctl try-restart bulkhead.socket >/dev/null 2>&1 || :
    fi
fi
/usr/share/bulkhead/doctor-verdict || :
exit 0
