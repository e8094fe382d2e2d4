# Sourced by the scripts in this folder: make ./.venv hold ropefix and its tools, once.
# torch is pinned to 2.13.0 because that CPU build is what pip finds locally on the kit's
# development machines; elsewhere pip downloads the same release from the index.
ROPEFIX_TORCH="${ROPEFIX_TORCH:-torch==2.13.0}"
if [ ! -x .venv/bin/ropefix ] || [ pyproject.toml -nt .venv/.ropefix-installed ]; then
  echo "bootstrap: installing ropefix into .venv (once)" >&2
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "$ROPEFIX_TORCH"
  .venv/bin/python -m pip install -q -e ".[all,test]" "$ROPEFIX_TORCH"  # every command's extra, and the test tools
  touch .venv/.ropefix-installed
fi
