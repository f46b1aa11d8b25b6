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

# The major.minor version of interpreter $1, or nothing.
python_version() {
	"$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}

# Reuse .venv when its interpreter still works and is the version $PYTHON
# is; recreate it otherwise (the Python it was made from is gone, or
# PYTHON=python3.12 asks for another one).
# ensure_venv EXTRAS [PIP ARGS...]: the project with these comma-separated
# extras (pyproject.toml), editable, and whatever else PIP ARGS name.
ensure_venv() {
	local have
	have=$(python_version "$VENV/bin/python")
	if [ -z "$have" ] || [ "$have" != "$(python_version "$PYTHON")" ]; then
		ensure_python
		rm -rf "$VENV"
		"$PYTHON" -m venv "$VENV"
	fi
	echo "installing the project with extras [$1] into $VENV"
	"$VENV/bin/python" -m pip install -q -e ".[$1]" "${@:2}" </dev/null
}

