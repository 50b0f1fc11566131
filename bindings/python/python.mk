# Python binding: included by the top Makefile.
#   make python        build buttress._core in place (python/buttress/)
#   make test-python   install pytest/hypothesis/mypy if missing, build, run pytest
PYTHON_TESTS := test-python
PY_TEST_DEPS := pytest hypothesis mypy setuptools wheel matplotlib prometheus_client \
  opentelemetry-api opentelemetry-sdk
PY_TEST_IMPORTS := pytest, hypothesis, mypy, setuptools, wheel, matplotlib, prometheus_client, \
  opentelemetry.metrics, opentelemetry.sdk.metrics

.PHONY: python test-python python-deps

python:
	@$(PYTHON) setup.py -q build_ext --inplace --build-temp $(BUILD)/python >/dev/null

python-deps:
	@$(PYTHON) -c "import $(PY_TEST_IMPORTS)" 2>/dev/null || \
	  $(PYTHON) -m pip install -q $(PY_TEST_DEPS) 2>/dev/null || \
	  $(PYTHON) -m pip install -q --break-system-packages $(PY_TEST_DEPS)

# pytest's own summary line is the last thing printed.
test-python: python-deps python
	@PYTHONPATH=python $(PYTHON) -m pytest tests/python -q -p no:cacheprovider

# ------------------------------------------------------------ asan-python
# The Python suite against buttress._core (core + binding) built with
# -fsanitize=address,undefined into build/asan-python: its own build
# directory and its own import location (a copy of python/buttress), so the
# in-place build is untouched.  python3 itself is not instrumented, so the
# ASan runtime is preloaded, with libstdc++: C++ extensions loaded later
# (matplotlib's, for the drill's chart) throw exceptions, and ASan's
# __cxa_throw interceptor must find the real one at start-up.
#   detect_leaks=0     CPython keeps memory until exit by design
#   PYTHONMALLOC=malloc  Python objects go through malloc too, so an overrun
#                      of an object the binding builds is caught, not hidden
#                      in a pymalloc arena
#   BUTTRESS_SANITIZED tests shorten their loops: test_resources.py (and
#                      skips its RSS comparison: ASan quarantines freed
#                      memory), test_model.py (a quarter of the examples)
# Left out, with the reason:
#   test_packaging.py  builds a wheel with pip and the normal flags: it tests
#                      packaging, not this build
#   test_examples.py::test_mypy*  static typing: runs no code of buttress
ASAN_PY := $(BUILD)/asan-python
ASAN_PY_CC := $(or $(shell command -v gcc 2>/dev/null),$(CC))
ASAN_PY_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
  -fno-sanitize-recover=all
ASAN_PY_SKIP := --ignore=tests/python/test_packaging.py \
  --deselect tests/python/test_examples.py::test_mypy_strict_passes_on_examples_and_package \
  --deselect tests/python/test_examples.py::test_mypy_sees_the_wrapped_signature

.PHONY: asan-python
asan-python: python-deps
	@rm -rf $(ASAN_PY)/lib && mkdir -p $(ASAN_PY)/lib/buttress $(ASAN_PY)/tmp
	@cp python/buttress/*.py python/buttress/*.pyi python/buttress/py.typed $(ASAN_PY)/lib/buttress/
	@CC=$(ASAN_PY_CC) LDSHARED="$(ASAN_PY_CC) -shared" CFLAGS="$(ASAN_PY_FLAGS)" \
	  LDFLAGS="-fsanitize=address,undefined" BUTTRESS_NO_LTO=1 \
	  $(PYTHON) setup.py -q build_ext --build-temp $(ASAN_PY)/tmp \
	  --build-lib $(ASAN_PY)/lib >$(ASAN_PY)/build.log 2>&1 || \
	  { cat $(ASAN_PY)/build.log; exit 1; }
	@nm -D $(ASAN_PY)/lib/buttress/_core*.so | grep -q __asan_report || \
	  { echo "asan-python: the extension is not instrumented"; exit 1; }
	@asan=$$($(ASAN_PY_CC) -print-file-name=libasan.so); \
	  case "$$asan" in /*) ;; *) \
	    asan=$$($(ASAN_PY_CC) -print-file-name=libclang_rt.asan-$$(uname -m).so);; esac; \
	  case "$$asan" in /*) ;; *) echo "asan-python: no ASan runtime for $(ASAN_PY_CC)"; exit 1;; esac; \
	  cxx=$$($(ASAN_PY_CC) -print-file-name=libstdc++.so); \
	  case "$$cxx" in /*) asan="$$asan $$cxx";; esac; \
	  export LD_PRELOAD="$$asan" PYTHONPATH=$(ASAN_PY)/lib PYTHONMALLOC=malloc \
	    BUTTRESS_SANITIZED=1 PYTHONDONTWRITEBYTECODE=1 \
	    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1; \
	  $(PYTHON) -c "import buttress._core as c, sys; p = c.__file__; \
	    sys.exit(0 if '/asan-python/lib/' in p else 'asan-python: imported ' + p)" || exit 1; \
	  $(PYTHON) -m pytest tests/python -q -p no:cacheprovider $(ASAN_PY_SKIP)
