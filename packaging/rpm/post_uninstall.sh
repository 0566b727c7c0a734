# bulkhead %postun. RPM has no purge: like other Fedora/RHEL packages, erasing bulkhead
# keeps the user `bulkhead` and the state in /var/lib/bulkhead (workspaces, credentials).
# Remove them by hand: rm -rf /var/lib/bulkhead; userdel bulkhead; groupdel bulkhead
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
