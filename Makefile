# The two commands of the README:
#   make course   installs everything into .venv and opens JupyterLab on notebooks/
#   make test     installs everything into .venv and runs the whole test suite
# torch is pinned here (not in pyproject.toml's range) so a fresh machine gets exactly this build.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
# JupyterLab refuses to start as root unless told to (containers, cloud notebooks often run as root)
JUPYTER_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: course test install clean-venv

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

course: install
	$(BIN)/jupyter lab $(JUPYTER_ARGS) notebooks/

# The grader runs every submission in a bubblewrap sandbox; as root with apt-get, install it (its
# tests skip, saying how to install it, where it is missing).
test: install
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null 2>&1 \
	  && echo "make: installed bubblewrap"; } || true
	COURSE_FAST=1 $(BIN)/python -m pytest --nbval-lax -p no:cacheprovider $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
