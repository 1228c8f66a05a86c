#!/usr/bin/env bash
# Install what kubevpc needs on Debian 12 / Ubuntu 22.04 / Ubuntu 24.04.
#
#   sudo bash scripts/install.sh                 everything: apt packages, Open vSwitch, .venv, CLI link
#   bash scripts/install.sh --python-only        only the virtual environment .venv (no root needed)
#   bash scripts/install.sh --check              report what is missing, change nothing (exit 1 if so)
#
# Idempotent: a second run prints nothing. Each step it actually takes prints one line.
# Never reads standard input.
set -euo pipefail

usage() {
    sed -n '2,9s/^# \{0,1\}//p' "$0"
}

CHECK=0
PYTHON_ONLY=0
for arg in "$@"; do
    case $arg in
        --check) CHECK=1 ;;
        --python-only) PYTHON_ONLY=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

exec </dev/null                       # nothing below may wait for input
cd "$(dirname "$0")/.."
TOP=$(pwd -P)

APT_PACKAGES=(
    openvswitch-switch mininet iperf3 ethtool tcpdump iproute2 iputils-ping traceroute
    iptables python3-venv python3-pip dnsmasq-base nginx-light curl
    graphviz                          # kubevpc graph -o png|svg (Graphviz's dot)
    make                              # the Makefile is the documented entry point
)
SYS_PYTHON=/usr/bin/python3           # Debian's mininet package lives in the system Python
VENV=$TOP/.venv
STAMP=$VENV/.installed
OVS_CTL=/usr/share/openvswitch/scripts/ovs-ctl
OVS_RUNDIR=${OVS_RUNDIR:-/var/run/openvswitch}   # ovs-ctl, ovs-vsctl, ovs-appctl honour the same variables
OVS_LOGDIR=${OVS_LOGDIR:-/var/log/openvswitch}
LINK=/usr/local/bin/kubevpc
TSO_KEY=userspace-tso-enable
OVS_DEADLINE=30                       # seconds to wait for Open vSwitch to answer

MISSING=0
JUST_INSTALLED=" "                    # apt packages installed by this run

say()  { printf 'install: %s\n' "$*"; }
die()  { printf 'install: error: %s\n' "$*" >&2; exit 1; }
lack() { printf 'missing: %s\n' "$*"; MISSING=1; }

# Run a command with its output kept aside; show the output only if it fails.
run_quiet() {
    local log rc=0
    log=$(mktemp)
    "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        cat "$log" >&2
        rm -f "$log"
        die "command failed (exit $rc): $*"
    fi
    rm -f "$log"
}

have_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }
has_unit()     { have_systemd && systemctl cat "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- apt packages

pkg_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

# A wanted package is satisfied by itself or, for nginx, by any flavour of it.
pkg_satisfied() {
    local p
    case $1 in
        nginx-light)
            for p in nginx-light nginx nginx-core nginx-full nginx-extras; do
                pkg_installed "$p" && return 0
            done
            return 1 ;;
        *) pkg_installed "$1" ;;
    esac
}

has_candidate() {
    local c
    c=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
    [ -n "$c" ] && [ "$c" != "(none)" ]
}

step_apt() {
    local p missing=() names=()
    for p in "${APT_PACKAGES[@]}"; do
        pkg_satisfied "$p" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$CHECK" = 1 ]; then
        lack "apt packages: ${missing[*]}"
        return 0
    fi

    export DEBIAN_FRONTEND=noninteractive
    export NEEDRESTART_SUSPEND=1      # Ubuntu: do not let needrestart restart running services
    say "apt-get update"
    run_quiet apt-get -q -o DPkg::Lock::Timeout=300 update
    for p in "${missing[@]}"; do
        # nginx-light is not built for every release: fall back to plain nginx
        if [ "$p" = nginx-light ] && ! has_candidate nginx-light; then p=nginx; fi
        names+=("$p")
    done
    say "apt-get install ${names[*]}"
    # --no-install-recommends: mininet would otherwise pull in extras, and e.g.
    # openvswitch-testcontroller would start a controller on port 6653.
    run_quiet apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confold -o DPkg::Lock::Timeout=300 "${names[@]}"
    JUST_INSTALLED=" ${names[*]} "

    case $JUST_INSTALLED in
        *" nginx-light "*|*" nginx "*) stop_package_nginx ;;
    esac
}

# The tests run their own nginx instances: leave none running from the package.
stop_package_nginx() {
    local pid
    if have_systemd; then
        if systemctl is-enabled --quiet nginx 2>/dev/null || systemctl is-active --quiet nginx 2>/dev/null; then
            say "disabling the nginx service started by the package (tests run their own nginx)"
            systemctl disable --now nginx >/dev/null 2>&1 || true
        fi
    elif [ -s /run/nginx.pid ]; then
        # no systemd: only if the package's init script really started one
        pid=$(cat /run/nginx.pid 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            say "stopping the nginx started by the package (tests run their own nginx)"
            nginx -s quit 2>/dev/null || kill "$pid" 2>/dev/null || true
        fi
    fi
}

# --------------------------------------------------------------- Open vSwitch

ovs_daemon_up() { ovs-appctl --timeout=5 -t "$1" version >/dev/null 2>&1; }
tso_value()     { ovs-vsctl --timeout=5 --if-exists get Open_vSwitch . "other_config:$TSO_KEY" 2>/dev/null | tr -d '"'; }

# Wait until ovsdb-server (and, with "vswitchd", ovs-vswitchd too) answers.
wait_for_ovs() {
    local deadline=$((SECONDS + OVS_DEADLINE))
    until ovs-vsctl --timeout=5 show >/dev/null 2>&1 &&
          { [ "${1:-}" != vswitchd ] || ovs_daemon_up ovs-vswitchd; }; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            die "Open vSwitch did not answer within ${OVS_DEADLINE}s ('ovs-vsctl --timeout=5 show' fails);" \
                "see $OVS_LOGDIR/ovsdb-server.log and $OVS_LOGDIR/ovs-vswitchd.log"
        fi
        sleep 1
    done
}

start_ovsdb() {
    if has_unit ovsdb-server.service; then
        say "starting ovsdb-server (systemctl start ovsdb-server)"
        run_quiet systemctl start ovsdb-server
    else
        say "starting ovsdb-server ($OVS_CTL start --no-ovs-vswitchd)"
        run_quiet "$OVS_CTL" start --no-ovs-vswitchd --system-id=random
    fi
}

start_vswitchd() {
    if has_unit openvswitch-switch.service; then
        say "starting ovs-vswitchd (systemctl start openvswitch-switch)"
        run_quiet systemctl start openvswitch-switch
    else
        say "starting ovs-vswitchd ($OVS_CTL start --no-ovsdb-server)"
        if ! "$OVS_CTL" start --no-ovsdb-server --system-id=random >/dev/null 2>&1; then
            # ovs-ctl gives up when the kernel has module support but no
            # openvswitch module; the userspace datapath does not need it.
            ovs-vswitchd "unix:$OVS_RUNDIR/db.sock" -vconsole:emer -vsyslog:err -vfile:info \
                --no-chdir --log-file="$OVS_LOGDIR/ovs-vswitchd.log" \
                --pidfile="$OVS_RUNDIR/ovs-vswitchd.pid" --detach --monitor ||
                die "could not start ovs-vswitchd; see $OVS_LOGDIR/ovs-vswitchd.log"
        fi
    fi
}

restart_vswitchd() {
    if has_unit ovs-vswitchd.service; then
        run_quiet systemctl restart ovs-vswitchd
    elif has_unit openvswitch-switch.service; then
        run_quiet systemctl restart openvswitch-switch
    else
        run_quiet "$OVS_CTL" stop --no-ovsdb-server
        start_vswitchd >/dev/null
    fi
}

step_ovs() {
    local datapath db_up=0 vs_up=0 fresh=0

    if ! command -v ovs-vsctl >/dev/null 2>&1; then
        [ "$CHECK" = 1 ] && { lack "Open vSwitch (apt package openvswitch-switch)"; return 0; }
        die "ovs-vsctl not found although openvswitch-switch should be installed"
    fi

    # Kernel datapath when the openvswitch module can be loaded, else userspace (netdev).
    if [ -d /sys/module/openvswitch ]; then
        datapath="kernel datapath available"
    elif [ "$CHECK" = 1 ] && modinfo openvswitch >/dev/null 2>&1; then
        datapath="kernel datapath available (module not loaded yet)"
    elif [ "$CHECK" = 0 ] && command -v modprobe >/dev/null 2>&1 && modprobe openvswitch >/dev/null 2>&1; then
        say "loaded the openvswitch kernel module"
        datapath="kernel datapath available"
    else
        datapath="userspace datapath (no openvswitch kernel module)"
    fi

    ovs_daemon_up ovsdb-server && db_up=1
    ovs_daemon_up ovs-vswitchd && vs_up=1

    if [ "$CHECK" = 1 ]; then
        [ "$db_up" = 1 ] || lack "Open vSwitch: ovsdb-server is not running"
        [ "$vs_up" = 1 ] || lack "Open vSwitch: ovs-vswitchd is not running"
        if [ "$db_up" = 1 ] && [ "$(tso_value)" != true ]; then
            lack "Open vSwitch: other_config:$TSO_KEY=true is not set"
        fi
        return 0
    fi

    # A running OVS may carry other users' bridges: never restart it, unless
    # the package was installed (and its service started) by this very run.
    case $JUST_INSTALLED in *" openvswitch-switch "*) fresh=1 ;; esac

    if [ "$db_up" = 0 ]; then
        say "Open vSwitch: $datapath"
        start_ovsdb
        wait_for_ovs
    fi

    if [ "$(tso_value)" != true ]; then
        # --no-wait: ovs-vswitchd may not be running yet
        run_quiet ovs-vsctl --timeout=5 --no-wait set Open_vSwitch . "other_config:$TSO_KEY=true"
        if [ "$vs_up" = 0 ]; then
            say "set other_config:$TSO_KEY=true (read when ovs-vswitchd starts)"
        elif [ "$fresh" = 1 ]; then
            say "set other_config:$TSO_KEY=true; restarting the ovs-vswitchd the package just started"
            restart_vswitchd
        else
            # Open vSwitch 3.x turns userspace TSO on at once when the key is set (and never off
            # again while it runs); kubevpc checks ovs-vswitchd's log to see whether it is active
            say "set other_config:$TSO_KEY=true on the running Open vSwitch (not restarted)"
        fi
    fi

    if ! ovs_daemon_up ovs-vswitchd; then
        [ "$db_up" = 1 ] && say "Open vSwitch: $datapath"
        start_vswitchd
    fi
    wait_for_ovs vswitchd
}

# --------------------------------------------------------------------- Python

venv_ok() {
    local cfg=$VENV/pyvenv.cfg
    [ -x "$VENV/bin/python" ] && [ -f "$cfg" ] &&
        grep -qiE '^include-system-site-packages *= *true' "$cfg" &&
        grep -qE '^home *= */usr/bin/?$' "$cfg" &&
        "$VENV/bin/python" -c '' >/dev/null 2>&1
}

step_python() {
    local modules="os_ken, pydantic, yaml" err

    [ -x "$SYS_PYTHON" ] || {
        [ "$CHECK" = 1 ] && { lack "$SYS_PYTHON (apt package python3)"; return 0; }
        die "$SYS_PYTHON not found: install Debian's python3 (apt-get install python3 python3-venv)"
    }

    if ! venv_ok; then
        [ "$CHECK" = 1 ] && { lack "virtual environment $VENV (made by $SYS_PYTHON with --system-site-packages)"; return 0; }
        if [ -e "$VENV" ]; then
            say "recreating .venv (it was not made by $SYS_PYTHON -m venv --system-site-packages)"
            rm -rf "$VENV"
        else
            say "creating .venv ($SYS_PYTHON -m venv --system-site-packages)"
        fi
        if ! err=$("$SYS_PYTHON" -m venv --system-site-packages "$VENV" 2>&1); then
            printf '%s\n' "$err" >&2
            rm -rf "$VENV"
            die "could not create .venv: is python3-venv installed? (sudo bash scripts/install.sh installs it)"
        fi
    fi

    if [ ! -e "$STAMP" ] || [ "$TOP/pyproject.toml" -nt "$STAMP" ]; then
        if [ "$CHECK" = 1 ]; then
            lack "python packages in .venv (pip install -e '.[test,perf]'; pyproject.toml is newer than the last install)"
        else
            say "pip install -e '.[test,perf]' into .venv"
            run_quiet "$VENV/bin/pip" install -q --disable-pip-version-check -e "$TOP[test,perf]"   # perf: matplotlib, for kubevpc perf's chart
            touch "$STAMP"
        fi
    fi

    # mininet comes from apt into the system Python; --python-only does not need it
    [ "$PYTHON_ONLY" = 1 ] || modules="mininet.net, $modules"
    if ! err=$("$VENV/bin/python" -c "import $modules" 2>&1); then
        if [ "$CHECK" = 1 ]; then
            lack "python modules in .venv: 'import $modules' fails: $(printf '%s\n' "$err" | tail -n 1)"
            return 0
        fi
        printf '%s\n' "$err" >&2
        die ".venv/bin/python cannot 'import $modules' (mininet comes from the apt package" \
            "mininet in $SYS_PYTHON; the rest from pip: remove $STAMP and run again)"
    fi
}

# ------------------------------------------------------------------- CLI link

step_link() {
    local target=$VENV/bin/kubevpc
    [ "$(readlink "$LINK" 2>/dev/null || true)" = "$target" ] && return 0
    if [ "$CHECK" = 1 ]; then
        lack "$LINK -> $target"
        return 0
    fi
    mkdir -p "$(dirname "$LINK")"
    ln -sf "$target" "$LINK"
    say "linked $LINK -> $target (the kubevpc command is on PATH)"
}

# ----------------------------------------------------------------------- main

if [ "$PYTHON_ONLY" = 1 ]; then
    step_python
else
    if [ "$CHECK" = 0 ] && [ "$(id -u)" -ne 0 ]; then
        die "must run as root (sudo bash scripts/install.sh); 'bash scripts/install.sh --python-only' makes only .venv"
    fi
    step_apt
    step_ovs
    step_python
    step_link
fi

if [ "$CHECK" = 1 ]; then
    exit "$MISSING"
fi
