#!/usr/bin/env bash
# Packaging smoke test: installs target/debian/bulkhead_*.deb (from `make deb`) on this host,
# checks files, modes, the user, units and man pages, runs `bulkhead doctor`, uses bulkhead as
# an unprivileged member of group bulkhead (workspace create + exec through the setuid
# launcher), then purges the package and checks that nothing is left.
#
# Run as root on a disposable host (CI does): `make deb && bash tests/package-smoke.sh`.
# KEEP=1 leaves the package and the test user installed after a failure, for a look around.
# Every check names its step; the first failure ends the run with
# "package-smoke: FAILED at <step>: <what>".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

SMOKE_USER=bhsmoke
STATE=/var/lib/bulkhead
SMOKE_STATE=$STATE/smoke
LAUNCHER=/usr/libexec/bulkhead/bulkhead-launch
STEP="start"
DONE=0

step() {
    STEP="$*"
    echo "== $STEP"
}
fail() {
    echo "package-smoke: FAILED at ${STEP}: $*" >&2
    exit 1
}
check() { # check "what" cmd...: runs cmd, fails the step with "what" unless it succeeds
    local what=$1
    shift
    "$@" || fail "$what"
}
mode_of() { stat -c '%a %U:%G' "$1" 2>/dev/null; }
expect_mode() { # path "mode user:group"
    local got
    got=$(mode_of "$1")
    [ "$got" = "$2" ] || fail "$1 is '${got:-missing}', expected '$2'"
    echo "   $1: $2"
}
# The setuid launcher does cgroup work with its caller's rights only, so a caller needs a
# cgroup delegated to it (what systemd's Delegate=yes gives bulkhead@.service on a v2
# host). Here, with no systemd: one of its own in each hierarchy the launcher uses.
CG_DIRS=()
delegate() { # delegate USER
    local u=$1 d ctrl path
    if [ -e /sys/fs/cgroup/cgroup.controllers ]; then # pure v2
        path=$(sed -n 's/^0:://p' /proc/self/cgroup)
        d=/sys/fs/cgroup${path%/}/bulkhead-smoke-$u
        mkdir -p "$d" || fail "mkdir $d"
        chown "$u" "$d" "$d/cgroup.procs" "$d/cgroup.subtree_control" "$d/cgroup.threads" || fail "chown $d"
        CG_DIRS+=("$d")
    else # v1 memory, pids, cpu (a hybrid host)
        for ctrl in memory pids cpu; do
            path=$(awk -F: -v c=$ctrl '{n = split($2, a, ","); for (i = 1; i <= n; i++) if (a[i] == c) print $3}' /proc/self/cgroup)
            d=/sys/fs/cgroup/$ctrl${path%/}/bulkhead-smoke-$u
            mkdir -p "$d" || fail "mkdir $d"
            chown -R "$u" "$d" || fail "chown $d"
            CG_DIRS+=("$d")
        done
    fi
}
join_cgroups() { # join_cgroups USER PID: moves PID into USER's delegated cgroups
    local d
    for d in "${CG_DIRS[@]}"; do
        case $d in *-"$1") echo "$2" >"$d/cgroup.procs" || return 1 ;; esac
    done
}
undelegate() {
    local d
    for d in "${CG_DIRS[@]}"; do
        [ -d "$d/bulkhead-leaf" ] && rmdir "$d/bulkhead-leaf" 2>/dev/null
        rmdir "$d" 2>/dev/null
    done
    CG_DIRS=()
}
as_user() { # as_user USER cmd...: the user's ids and groups, its cgroup, a clean environment
    local u=$1
    shift
    (join_cgroups "$u" "$BASHPID" && cd / && setpriv --reuid="$u" --regid="$(id -g "$u")" --init-groups \
        env -i PATH=/usr/bin:/bin HOME="$SMOKE_STATE" LANG=C "$@")
}
SAVED_STATE=""
HAD_ETC=0
restore() { # puts back what was on the host before the run (see "preconditions")
    if [ -n "$SAVED_STATE" ] && [ -e "$SAVED_STATE" ] && [ ! -e $STATE ]; then
        mv "$SAVED_STATE" $STATE && echo "package-smoke: restored the host's own $STATE"
    fi
    [ "$HAD_ETC" = 1 ] && mkdir -p /etc/bulkhead
}
cleanup() {
    if [ "$DONE" != 1 ]; then
        if [ "${KEEP:-0}" = 1 ]; then
            echo "package-smoke: KEEP=1: leaving bulkhead and user $SMOKE_USER installed" >&2
            return
        fi
        echo "package-smoke: cleaning up after the failure" >&2
        dpkg -s bulkhead >/dev/null 2>&1 && apt-get purge -y -qq bulkhead >/dev/null 2>&1
        getent passwd "$SMOKE_USER" >/dev/null && userdel "$SMOKE_USER" 2>/dev/null
        getent group "$SMOKE_USER" >/dev/null && groupdel "$SMOKE_USER" 2>/dev/null
    fi
    undelegate
    restore
}
trap cleanup EXIT

step "preconditions"
[ "$(id -u)" = 0 ] || fail "run as root (it installs a package and adds users)"
shopt -s nullglob
debs=(target/debian/bulkhead_*.deb)
[ ${#debs[@]} -ge 1 ] || fail "no target/debian/bulkhead_*.deb: run make deb first"
DEB=$(ls -t "${debs[@]}" | head -1) # the newest
echo "   $DEB"
if dpkg -s bulkhead >/dev/null 2>&1; then
    echo "   bulkhead is installed already: purging it first"
    apt-get purge -y -qq bulkhead >/dev/null || fail "cannot purge the installed bulkhead"
fi
# Purging removes /var/lib/bulkhead and /etc/bulkhead: keep a host's own (state a root
# `bulkhead` made without --state-dir, the mount point the setuid tests bind over) aside.
if [ -e $STATE ] || [ -L $STATE ]; then
    SAVED_STATE=$STATE.pre-smoke.$$
    mv $STATE "$SAVED_STATE" || fail "cannot move the host's $STATE aside"
    echo "   the host's own $STATE moved to $SAVED_STATE for the run"
fi
if [ -d /etc/bulkhead ]; then
    HAD_ETC=1
    [ -z "$(ls -A /etc/bulkhead)" ] || fail "/etc/bulkhead exists and is not empty: not this script's to replace"
fi
# A test user left by an interrupted run.
getent passwd "$SMOKE_USER" >/dev/null && userdel "$SMOKE_USER"
getent group "$SMOKE_USER" >/dev/null && groupdel "$SMOKE_USER"

step "install (apt-get install ./$DEB)"
if ! apt-get install -y -qq "./$DEB"; then
    echo "   apt-get install failed; trying dpkg -i + apt-get -f install"
    dpkg -i "$DEB" || true
    check "apt-get -f install" apt-get install -f -y -qq
fi
check "package not installed after install" dpkg -s bulkhead >/dev/null

step "files and modes"
expect_mode /usr/bin/bulkhead "755 root:root"
expect_mode $LAUNCHER "4750 root:bulkhead"
expect_mode /usr/libexec/bulkhead/bulkhead-worker "755 root:root"
expect_mode /etc/bulkhead/launch.toml "644 root:root"
expect_mode /etc/bulkhead/config.toml "644 root:root"
expect_mode $STATE "700 bulkhead:bulkhead"
[ "$(readlink $STATE/config.toml)" = /etc/bulkhead/config.toml ] ||
    fail "$STATE/config.toml is not a link to /etc/bulkhead/config.toml"
check "no statoverride for the launcher" dpkg-statoverride --list $LAUNCHER >/dev/null
conffiles=$(dpkg-query -W -f='${Conffiles}' bulkhead)
for f in /etc/bulkhead/launch.toml /etc/bulkhead/config.toml; do
    grep -q "$f" <<<"$conffiles" || fail "$f is not a conffile"
done
for f in /lib/systemd/system/bulkhead.socket /lib/systemd/system/bulkhead@.service \
    /lib/systemd/system/bulkhead.slice \
    /usr/share/man/man1/bulkhead.1.gz /usr/share/man/man1/bulkhead-exec.1.gz \
    /usr/share/man/man5/bulkhead-policy.5.gz /usr/share/man/man8/bulkhead-launch.8.gz \
    /usr/share/bash-completion/completions/bulkhead /usr/share/zsh/vendor-completions/_bulkhead \
    /usr/share/fish/vendor_completions.d/bulkhead.fish; do
    [ -f "$f" ] || fail "$f missing"
done
echo "   units, man pages, completions present"

step "system user and group bulkhead"
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd bulkhead) || fail "no user bulkhead"
[ "$uid" -lt 1000 ] || fail "user bulkhead has uid $uid, not a system uid"
[ "$home" = $STATE ] || fail "user bulkhead's home is $home"
case "$shell" in */nologin | */false) ;; *) fail "user bulkhead has login shell $shell" ;; esac
[ "$(getent group bulkhead | cut -d: -f3)" = "$gid" ] || fail "group bulkhead is not its group"
echo "   bulkhead: uid $uid, gid $gid, home $home, shell $shell"

step "man pages render"
if command -v man >/dev/null; then
    for p in bulkhead bulkhead-launch bulkhead-policy; do
        out=$(MANWIDTH=80 man "$p" 2>/dev/null) || fail "man $p"
        [ -n "$out" ] || fail "man $p is empty"
    done
    MANWIDTH=80 man bulkhead-launch 2>/dev/null | grep -q "PRIVILEGED MODE" ||
        fail "bulkhead-launch(8) has no PRIVILEGED MODE section"
    echo "   bulkhead(1), bulkhead-launch(8), bulkhead-policy(5)"
else
    for f in /usr/share/man/man1/bulkhead.1.gz /usr/share/man/man5/bulkhead-policy.5.gz \
        /usr/share/man/man8/bulkhead-launch.8.gz; do
        zcat "$f" | grep -q '^\.TH ' || fail "$f is not a gzipped man page"
    done
    echo "   note: no man(1) on this host; checked the pages are gzipped roff"
fi

step "systemd units (systemd-analyze verify)"
if command -v systemd-analyze >/dev/null; then
    tmpu=$(mktemp -d)
    cp /lib/systemd/system/bulkhead.socket /lib/systemd/system/bulkhead.slice "$tmpu/"
    cp /lib/systemd/system/bulkhead@.service "$tmpu/bulkhead@.service"
    ln -s bulkhead@.service "$tmpu/bulkhead@smoke.service"
    if out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no \
        "$tmpu/bulkhead.socket" "$tmpu/bulkhead@smoke.service" "$tmpu/bulkhead.slice" 2>&1); then
        [ -z "$out" ] || echo "$out" | sed 's/^/   /'
        if grep -qiE 'unknown|ignoring|invalid|bad unit|refusing|not executable' <<<"$out"; then
            rm -rf "$tmpu"
            fail "systemd-analyze verify warned (above)"
        fi
        echo "   verified"
    elif grep -qiE 'bulkhead|\.service|\.socket|\.slice' <<<"$out" &&
        ! grep -qiE 'Failed to (initialize|setup|connect|create manager)|No such file or directory.*/run/systemd' <<<"$out"; then
        rm -rf "$tmpu"
        fail "systemd-analyze verify: $out"
    else
        echo "   note: systemd-analyze cannot verify on this host, skipped: $out"
    fi
    rm -rf "$tmpu"
else
    echo "   note: no systemd-analyze on this host, skipped"
fi

step "the setuid launcher refuses users outside group bulkhead"
# Through sh: setpriv itself may still hold root's capabilities (CAP_DAC_OVERRIDE) at its
# exec; its child program has none.
if setpriv --reuid=nobody --regid=nogroup --clear-groups sh -c 'exec "$0" --version' $LAUNCHER >/dev/null 2>&1; then
    fail "user nobody (not in group bulkhead) could execute $LAUNCHER"
fi
echo "   nobody: permission denied"

step "bulkhead doctor (root)"
root_state=$(mktemp -d $STATE/doctor-root.XXXXXX)
out=$(BULKHEAD_STATE_DIR=$root_state timeout 120 bulkhead doctor 2>&1)
rc=$?
rm -rf "$root_state"
echo "$out" | sed 's/^/   /'
[ $rc = 0 ] || fail "bulkhead doctor exited $rc (5: a required layer is missing; see above)"

step "JSON-RPC on a socket: bulkhead@.service's command as user bulkhead"
# Without a running systemd, systemd-socket-activate stands in for bulkhead.socket
# (Accept=yes): each connection runs the unit's ExecStart= with its Environment=, as the
# unit's user. (The unit's own sandboxing options are covered by the verify step only.)
unit=/lib/systemd/system/bulkhead@.service
if command -v systemd-socket-activate >/dev/null && command -v python3 >/dev/null; then
    read -r -a execstart < <(sed -n 's/^ExecStart=//p' $unit)
    read -r -a unitenv < <(sed -n 's/^Environment=//p' $unit)
    [ "$(sed -n 's/^User=//p' $unit)" = bulkhead ] || fail "$unit: User= is not bulkhead"
    sockdir=$(mktemp -d /run/bulkhead-smoke.XXXXXX)
    chmod 755 "$sockdir"
    delegate bulkhead
    procs=$(for d in "${CG_DIRS[@]}"; do case $d in *-bulkhead) printf '%s ' "$d/cgroup.procs" ;; esac; done)
    systemd-socket-activate -l "$sockdir/sock" --accept --inetd -- \
        sh -c 'for p in $0; do echo $$ > "$p" || exit 98; done; exec "$@"' "$procs" \
        setpriv --reuid=bulkhead --regid=bulkhead --init-groups \
        env -i PATH=/usr/bin:/bin "${unitenv[@]}" "${execstart[@]}" 2>"$sockdir/log" &
    sa=$!
    for _ in $(seq 50); do [ -S "$sockdir/sock" ] && break; sleep 0.1; done
    out=$(timeout 60 python3 - "$sockdir/sock" <<'PY' 2>&1
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
def call(i, method, params):
    f.write(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}) + "\n")
    f.flush()
    r = json.loads(f.readline())
    if "error" in r:
        sys.exit(f"{method}: {r['error']}")
    return r["result"]
call(1, "workspace.create", {"workspace": "rpc-smoke"})
r = call(2, "exec", {"workspace": "rpc-smoke", "argv": ["sh", "-c", "id -u; echo ok"]})
call(3, "workspace.delete", {"workspace": "rpc-smoke"})
print(r["exit_code"], " ".join(r["stdout"].split()))
PY
)
    rc=$?
    kill "$sa" 2>/dev/null
    wait "$sa" 2>/dev/null
    echo "   $out"
    if [ $rc != 0 ] || [ "$out" != "0 1000 ok" ]; then
        sed 's/^/   /' "$sockdir/log"
        rm -rf "$sockdir"
        fail "JSON-RPC workspace.create / exec / workspace.delete over the socket"
    fi
    rm -rf "$sockdir"
else
    echo "   note: no systemd-socket-activate or python3 on this host, skipped"
fi

step "unprivileged user $SMOKE_USER in group bulkhead"
useradd --system --user-group --no-create-home --home-dir "$SMOKE_STATE" \
    --shell /usr/sbin/nologin "$SMOKE_USER" || fail "useradd $SMOKE_USER"
usermod -a -G bulkhead "$SMOKE_USER" || fail "usermod -a -G bulkhead $SMOKE_USER"
install -d -m 0700 -o "$SMOKE_USER" -g "$SMOKE_USER" "$SMOKE_STATE"
delegate "$SMOKE_USER"
# The package keeps $STATE 0700 for the service alone. An operator who lets other members
# of group bulkhead keep their state under it (as state_roots requires) makes it traversable:
chmod 0710 $STATE
echo "   $SMOKE_USER: $(id "$SMOKE_USER"); state $SMOKE_STATE"

step "bulkhead doctor ($SMOKE_USER, through the setuid launcher)"
out=$(as_user "$SMOKE_USER" timeout 120 bulkhead --state-dir "$SMOKE_STATE" doctor 2>&1)
rc=$?
echo "$out" | sed 's/^/   /'
[ $rc = 0 ] || fail "bulkhead doctor as $SMOKE_USER exited $rc (see above)"

step "workspace create ($SMOKE_USER)"
out=$(as_user "$SMOKE_USER" bulkhead --state-dir "$SMOKE_STATE" workspace create smoke 2>&1)
rc=$?
echo "$out" | sed 's/^/   /'
[ $rc = 0 ] || fail "workspace create exited $rc"

step "exec in the sandbox ($SMOKE_USER)"
out=$(as_user "$SMOKE_USER" timeout 60 bulkhead --state-dir "$SMOKE_STATE" exec smoke -- \
    sh -c 'id; cat /proc/self/uid_map; echo ok' 2>&1)
rc=$?
echo "$out" | sed 's/^/   /'
[ $rc = 0 ] || fail "exec exited $rc (125: sandbox setup failed; the message above names the step)"
grep -qx ok <<<"$out" || fail "exec did not print ok"
grep -q 'uid=1000' <<<"$out" || fail "the sandbox does not run as uid 1000"
# Privileged mode: uid 1000 inside is one host id of launch.toml's range, not the caller.
read -r _ host_uid count < <(grep -E '^ *1000 ' <<<"$out") || fail "no uid_map line for 1000"
id_start=$(sed -n 's/^host_id_start *= *\([0-9]*\).*/\1/p' /etc/bulkhead/launch.toml)
id_count=$(sed -n 's/^host_id_count *= *\([0-9]*\).*/\1/p' /etc/bulkhead/launch.toml)
if [ "$host_uid" -lt "$id_start" ] || [ "$host_uid" -ge $((id_start + id_count)) ] || [ "$count" != 1 ]; then
    fail "sandbox uid 1000 maps to host $host_uid (x$count), not one id of $id_start+$id_count: not the setuid launcher's privileged mode"
fi
echo "   sandbox uid 1000 = host uid $host_uid (launch.toml range): privileged mode"

step "workspace delete ($SMOKE_USER)"
check "workspace delete" as_user "$SMOKE_USER" bulkhead --state-dir "$SMOKE_STATE" workspace delete smoke >/dev/null
chmod 0700 $STATE

undelegate

step "purge (apt-get purge bulkhead)"
check "apt-get purge" apt-get purge -y -qq bulkhead
for p in /usr/bin/bulkhead /usr/libexec/bulkhead /etc/bulkhead $STATE /var/lib/bulkhead-launch \
    /lib/systemd/system/bulkhead.socket /lib/systemd/system/bulkhead@.service \
    /usr/share/man/man8/bulkhead-launch.8.gz; do
    [ ! -e "$p" ] || fail "$p is left after purge"
done
getent passwd bulkhead >/dev/null && fail "user bulkhead is left after purge"
getent group bulkhead >/dev/null && fail "group bulkhead is left after purge"
dpkg-statoverride --list $LAUNCHER >/dev/null 2>&1 && fail "the launcher's statoverride is left after purge"
echo "   binaries, /etc/bulkhead, $STATE, user, group, statoverride: gone"

step "remove $SMOKE_USER"
userdel "$SMOKE_USER" || fail "userdel $SMOKE_USER"
getent group "$SMOKE_USER" >/dev/null && groupdel "$SMOKE_USER"

DONE=1
echo "package-smoke: OK"
