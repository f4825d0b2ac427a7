# Shell helpers shared by scripts/install.sh and benchmarks/install_peers.sh. Source it:
#   . "$(dirname "$0")/../scripts/lib.sh"

# install_debian_package COMMAND PACKAGE REQUIRED: apt-get PACKAGE unless COMMAND exists;
# without apt-get, warn, and fail if REQUIRED is 1.
install_debian_package() {
  command -v "$1" >/dev/null 2>&1 && return 0
  apt_install "$1" "$2" "$3"
}

# install_debian_package_for_file FILE WHAT PACKAGE REQUIRED: the same for something that is a
# file, not a command (a C header, say), named WHAT in the messages.
install_debian_package_for_file() {
  [ -e "$1" ] && return 0
  apt_install "$2" "$3" "$4"
}

# apt_install WHAT PACKAGE REQUIRED: apt-get PACKAGE (WHAT names it in the messages).
apt_install() {
  echo "==> installing $1 (Debian package $2)"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2" >/dev/null
  else
    echo "warning: no apt-get here; install $1 ($2) yourself" >&2
    [ "$3" = 1 ] && exit 1
  fi
  return 0
}

# install_debian_server_package COMMAND PACKAGE REQUIRED: install_debian_package for a package
# whose maintainer scripts would start a system service (redis-server on 6379, etcd on 2379):
# a policy-rc.d that exits 101 ("not allowed") is in place while apt-get runs, so none starts.
# The tests and benchmarks start their own servers on free ports.
install_debian_server_package() {
  command -v "$1" >/dev/null 2>&1 && return 0
  local sudo="" policy=/usr/sbin/policy-rc.d made_policy=0
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo"
  if [ ! -e "$policy" ] && command -v apt-get >/dev/null 2>&1; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    made_policy=1
  fi
  local status=0
  RUNLEVEL=1 apt_install "$1" "$2" "$3" || status=$?
  [ "$made_policy" = 1 ] && $sudo rm -f "$policy"
  return $status
}
