"""Build buttress: the C core (core/*.c) and its CPython binding as one
extension module, buttress._core; the Python code lives in python/buttress."""
import glob
import os
import re
import sys
import sysconfig

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def version():
    with open(os.path.join(HERE, "core", "buttress.h")) as f:
        return re.search(r'#define BUTTRESS_VERSION "([^"]+)"', f.read()).group(1)


# Relative paths: setuptools wants them for sdists and wheels.
sources = sorted(glob.glob("core/*.c")) + ["bindings/python/_core.c"]

extra = ["-std=c11", "-O2", "-fvisibility=hidden"]
link = []
cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or ""
if (sys.platform.startswith("linux") and "clang" not in cc
        and not os.environ.get("BUTTRESS_NO_LTO")):
    # One shared object: let the compiler inline the core into the binding
    # (the core's functions are exported, hence otherwise interposable).
    extra += ["-flto=auto", "-fno-semantic-interposition"]
    link += ["-flto=auto", "-O2", "-Wl,-Bsymbolic-functions"]
if os.environ.get("BUTTRESS_WERROR"):
    extra += ["-Wall", "-Wextra", "-Werror", "-Wno-missing-field-initializers",
              "-Wno-cast-function-type", "-Wno-unused-parameter"]

core = Extension(
    "buttress._core",
    sources=sources,
    include_dirs=["core"],
    depends=glob.glob("core/*.h"),
    define_macros=[("_GNU_SOURCE", "1")],
    extra_compile_args=extra,
    extra_link_args=link,
    libraries=["pthread", "m"] if sys.platform.startswith("linux") else [],
)

def long_description():
    path = os.path.join(HERE, "docs", "python.md")
    if not os.path.exists(path):  # building from a partial copy
        return ""
    with open(path) as f:
        return f.read()


setup(
    name="buttress",
    version=version(),
    description="Retry with backoff and jitter, circuit breakers, retry budgets "
                "and deadlines: one lock-free C core, Python decorators.",
    long_description=long_description(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    package_dir={"": "python"},
    packages=["buttress"],
    package_data={"buttress": ["py.typed", "*.pyi"]},
    ext_modules=[core],
    # Optional exporters (buttress.metrics); nothing is required at run time.
    extras_require={
        "prometheus": ["prometheus_client"],
        "otel": ["opentelemetry-api"],
    },
    zip_safe=False,
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: C",
        "Typing :: Typed",
    ],
)
