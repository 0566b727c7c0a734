# bulkhead %preun: on the last removal ($1 = 0), stop and disable the socket.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now bulkhead.socket >/dev/null 2>&1 || :
fi
exit 0
