# bulkhead %pre: the group must exist before the files are unpacked, so the setuid
# launcher gets root:bulkhead 4750 straight from the package.
getent group bulkhead >/dev/null || groupadd --system bulkhead
getent passwd bulkhead >/dev/null || \
    useradd --system --gid bulkhead --home-dir /var/lib/bulkhead --no-create-home \
        --shell /sbin/nologin --comment "bulkhead controller" bulkhead
exit 0
