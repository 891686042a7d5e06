#!/bin/sh
# fgext launcher: the platform runs this script to start the fgext agent.
# It must work from any unpack directory, so every path is taken relative to this file.
# The platform identifies an extension by this script's full file name, hence FGEXT_NAME.
set -eu

# Parameter expansion instead of dirname/basename: two fewer processes on every cold start.
case "$0" in
    */*) dir="${0%/*}" ;;
    *) dir=. ;;
esac
here=$(CDPATH= cd -- "$dir" && pwd)
FGEXT_NAME="${0##*/}"
FGEXT_HOME="$here"
export FGEXT_NAME FGEXT_HOME

# A packaged zip carries the agent and its libraries beside this script (fgext-lib) and the user's
# plugins in fgext-plugins; a source checkout has the fgext package one level up.
libpath=""
site_flag=""
if [ -d "$here/fgext-lib" ]; then
    libpath="$here/fgext-lib"
    # Everything the agent needs is in fgext-lib: skipping the runtime's site-packages scan (-S)
    # saves milliseconds of every cold start and keeps the runtime's packages out of the agent.
    # FGEXT_PYTHON_FLAGS replaces it (set it empty to keep site-packages).
    site_flag="${FGEXT_PYTHON_FLAGS--S}"
elif [ -f "$here/../fgext/__init__.py" ]; then
    libpath=$(CDPATH= cd -- "$here/.." && pwd)
fi
if [ -d "$here/fgext-plugins" ]; then
    libpath="${libpath:+$libpath:}$here/fgext-plugins"
fi
if [ -n "$libpath" ]; then
    PYTHONPATH="$libpath${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONPATH
fi
if [ -z "${FGEXT_CONFIG:-}" ] && [ -f "$here/fgext.json" ]; then
    FGEXT_CONFIG="$here/fgext.json"
    export FGEXT_CONFIG
fi

# Interpreter: an explicit choice, else the sandbox's runtimes newest first, else PATH.
python="${FGEXT_PYTHON:-}"
if [ -z "$python" ]; then
    for candidate in \
        /opt/function/runtime/python3.12/rtsp/python/bin/python3 \
        /opt/function/runtime/python3.10/rtsp/python/bin/python3 \
        /opt/function/runtime/python3.9/rtsp/python/bin/python3; do
        if [ -x "$candidate" ]; then
            python="$candidate"
            break
        fi
    done
fi
if [ -z "$python" ]; then
    python=$(command -v python3 || true)
fi
if [ -z "$python" ]; then
    echo "fgext: no Python interpreter found (set FGEXT_PYTHON)" >&2
    exit 127
fi

# The sandbox's code directory is read-only: never try to write byte code there.
PYTHONDONTWRITEBYTECODE=1
PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE PYTHONUNBUFFERED
# -c rather than -m fgext: runpy imports typing through importlib.util on Python 3.9 (~16 ms of every
# cold start, before registering). fgext/__main__.py's "run" does exactly this.
exec "$python" $site_flag -c 'import sys; from fgext._bootstrap import main_run; sys.exit(main_run())'
