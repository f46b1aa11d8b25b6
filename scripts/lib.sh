# Shared by scripts/test and scripts/demo: a working .venv with the project.
# Callers set PYTHON and VENV, and call ensure_venv EXTRAS.

# A fresh Debian has python3.11 but not always its venv module (ensurepip).
ensure_python() {
	if command -v "$PYTHON" >/dev/null && "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
		return
	fi
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "installing $PYTHON and its venv module with apt-get"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq </dev/null
		apt-get install -y -qq --no-install-recommends "$PYTHON" "$PYTHON-venv" </dev/null >/dev/null
	else
		echo "$PYTHON with the venv module is required" >&2
		exit 1
	fi
}

# Reuse .venv when its interpreter still works; recreate it otherwise (e.g.
# the Python it was made from is gone).
# ensure_venv EXTRAS: comma-separated setup.py extras to install.
ensure_venv() {
	if ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
		ensure_python
		rm -rf "$VENV"
		"$PYTHON" -m venv "$VENV"
	fi
	echo "installing the project with extras [$1] into $VENV"
	"$VENV/bin/python" -m pip install -q -e ".[$1]" </dev/null
}

