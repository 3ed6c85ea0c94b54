#!/bin/bash
# The systemd lane's suite: greha's shipped unit (dist/greha.service) under
# a real systemd as PID 1, with a kernel gretap peer and keepalived in a
# network namespace. Each check prints `vm-suite: NAME: ok|FAILED: why` on
# the serial console; the last line is `VM-SUITE-EXIT <failures>`.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CONSOLE=/dev/ttyS0
failures=0
say() { echo "vm-suite: $*" > "$CONSOLE"; }
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then
        say "$name: ok"
    else
        failures=$((failures + 1))
        say "$name: FAILED: $(echo "$out" | tail -n 15 | tr '\n' '|')"
    fi
}
# Polls `cmd` every 0.2 s for at most $1 seconds.
within() {
    local limit=$1 start=$SECONDS
    shift
    until "$@" > /dev/null 2>&1; do
        if (( SECONDS - start >= limit )); then
            echo "not within ${limit}s: $*"
            return 1
        fi
        sleep 0.2
    done
}
prop() { systemctl show -P "$1" greha; }
has_vip() { ip "$@" -4 addr show dev gretap1 2>/dev/null | grep -q "203.0.113.10/"; }
peer() { ip netns exec peer "$@"; }

write_config() {
    mkdir -p /etc/greha
    cat > /etc/greha/greha.toml <<CONF
[[tunnel]]
name = "gretap1"
mode = "gretap"
local = "198.51.100.1"
remote = "198.51.100.2"
addresses = ["192.0.2.1/24"]

[[vrrp]]
name = "VI_1"
interface = "gretap1"
vrid = 51
priority = $1
version = 2
advert_int = 1
auth_pass = "1111"
notify_master = "/usr/local/sbin/greha-notify"

[[vrrp.vip]]
address = "203.0.113.10/24"
dev = "gretap1"

[[vrrp.track_script]]
path = "/usr/local/sbin/greha-check"
interval = 1
weight = -20
CONF
    chmod 600 /etc/greha/greha.toml
}

setup() {
    ip netns add peer
    ip link add under0 type veth peer name under0 netns peer
    ip addr add 198.51.100.1/24 dev under0
    ip link set under0 up
    peer ip addr add 198.51.100.2/24 dev under0
    peer ip link set under0 up
    peer ip link set lo up
    # The kernel's own gretap as the far end, as the seed's server B.
    peer ip link add gretap1 type gretap local 198.51.100.2 remote 198.51.100.1
    peer ip addr add 192.0.2.2/24 dev gretap1
    peer ip link set gretap1 up
    mkdir -p /run/peer
    cat > /run/peer/keepalived.conf <<CONF
vrrp_instance VI_1 {
    state BACKUP
    interface gretap1
    virtual_router_id 51
    priority 100
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass 1111
    }
    virtual_ipaddress {
        203.0.113.10/24 dev gretap1
    }
}
CONF
    peer keepalived -D -f /run/peer/keepalived.conf -p /run/peer/k.pid -r /run/peer/v.pid
    # What keepalived users' notify scripts do: log to /var/log, ask systemd.
    cat > /usr/local/sbin/greha-notify <<'SH'
#!/bin/sh
echo "$(date +%s) $*" >> /var/log/greha-notify.log
logger -t greha-notify "$*"
SH
    chmod 755 /usr/local/sbin/greha-notify
    # Fails while the file exists; reads a path the unit's PrivateTmp
    # would hide from it.
    cat > /usr/local/sbin/greha-check <<'SH'
#!/bin/sh
[ ! -e /tmp/greha-check-fails ]
SH
    chmod 755 /usr/local/sbin/greha-check
    write_config 150
}

start_active() {
    systemctl start greha || { journalctl -u greha --no-pager | tail -n 20; return 1; }
    [ "$(prop ActiveState)" = active ] || return 1
    within 20 has_vip || { greha status; return 1; }
    # Through the tunnel to the kernel's gretap.
    ping -c 2 -W 5 192.0.2.2 > /dev/null || { greha tunnel show; return 1; }
    ! peer bash -c 'ip -4 addr show dev gretap1 | grep -q 203.0.113.10/'
}

reload_checks() {
    write_config 140
    systemctl reload greha || return 1
    within 10 priority_is 140 || { greha status; return 1; }
    echo 'this is [not toml' > /etc/greha/greha.toml
    if systemctl reload greha; then echo "an invalid file was accepted"; return 1; fi
    [ "$(prop ActiveState)" = active ] || { echo "not active after a refused reload"; return 1; }
    priority_is 140 || { greha status; return 1; }
    write_config 150
    systemctl reload greha
}

watchdog_alive() {
    local pid
    pid=$(prop MainPID)
    # Three times WatchdogSec.
    sleep 31
    [ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" = "$pid" ] &&
        [ "$(prop NRestarts)" = 0 ] || { systemctl status greha --no-pager; return 1; }
}

notify_script_ran() {
    # Written by the notify_master script (run with no arguments, as
    # keepalived runs it), a line per time greha became master.
    [ -s /var/log/greha-notify.log ] || {
        journalctl -u greha --no-pager | grep -i notify | tail -n 5
        return 1
    }
}

priority_is() { greha status --json | grep -Eq "\"priority\": ?$1,"; }

track_script_counts() {
    touch /tmp/greha-check-fails
    within 20 priority_is 130 || { greha status; return 1; }
    rm /tmp/greha-check-fails
    within 20 priority_is 150 || { greha status; return 1; }
}

kill_restart() {
    local pid
    pid=$(prop MainPID)
    kill -9 "$pid"
    within 30 bash -c "[ \"\$(systemctl show -P MainPID greha)\" != $pid ] && [ \"\$(systemctl show -P MainPID greha)\" != 0 ] && [ \"\$(systemctl show -P ActiveState greha)\" = active ]" ||
        { systemctl status greha --no-pager; return 1; }
    [ "$(prop NRestarts)" = 1 ] || return 1
    within 20 has_vip || return 1
    # One VIP, the tunnel adopted (still carrying traffic).
    [ "$(ip -4 addr show dev gretap1 | grep -c 203.0.113.10/)" = 1 ] || return 1
    ping -c 2 -W 5 192.0.2.2 > /dev/null
}

stop_resigns() {
    systemctl stop greha || return 1
    within 10 peer bash -c 'ip -4 addr show dev gretap1 | grep -q 203.0.113.10/' ||
        { echo "keepalived did not take over"; return 1; }
    ! ip link show gretap1 > /dev/null 2>&1 || { echo "the tunnel stayed"; return 1; }
    [ -z "$(ls -A /sys/fs/bpf/greha 2>/dev/null)" ] || { ls -R /sys/fs/bpf/greha; return 1; }
}

no_restart_loop() {
    sed -i 's/interface = "gretap1"/interface = "nosuch0"/' /etc/greha/greha.toml
    systemctl reset-failed greha 2> /dev/null
    if systemctl start greha; then echo "started with a missing interface"; return 1; fi
    sleep 4
    [ "$(prop NRestarts)" = 0 ] && [ "$(prop ActiveState)" = failed ] &&
        [ "$(prop ExecMainStatus)" = 78 ] || { systemctl status greha --no-pager; return 1; }
    journalctl -u greha --no-pager | grep -q "nosuch0 does not exist" || return 1
    write_config 150
    systemctl reset-failed greha
}

no_bpffs() {
    umount /sys/fs/bpf || return 1
    if systemctl start greha; then echo "started without bpffs"; umount /sys/fs/bpf; return 1; fi
    sleep 4
    local status
    status=$(prop ExecMainStatus)
    mount -t bpf bpf /sys/fs/bpf
    [ "$(prop NRestarts)" = 0 ] && [ "$status" = 78 ] || { systemctl status greha --no-pager; return 1; }
    journalctl -u greha --no-pager | grep -q "BPF filesystem" || return 1
    systemctl reset-failed greha
}

say "systemd $(systemctl --version | head -n 1 | cut -d' ' -f2) on $(uname -r)"
check setup setup
check start start_active
check reload reload_checks
check watchdog watchdog_alive
check notify-script notify_script_ran
check track-script track_script_counts
check kill-9-restart kill_restart
check stop-resigns stop_resigns
check no-restart-loop no_restart_loop
check no-bpffs no_bpffs
say "$failures checks failed"
echo "VM-SUITE-EXIT $failures" > "$CONSOLE"
systemctl poweroff --no-block
