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
