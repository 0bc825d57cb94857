"""The one thing pyproject.toml cannot say: the C extension (control/media/native/*.c).

Built by `pip install -e .` (so by `make deps`) from the repository's own source; needs a C
compiler and Python's headers (Debian: gcc, libc6-dev, python3-dev, in the Makefile's list).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "control.media.native._media",
            sources=[
                f"control/media/native/{name}.c"
                for name in ("_media", "io", "rtp", "jitter", "mix")
            ],
            depends=["control/media/native/media.h"],
            extra_compile_args=[
                "-O2",
                "-Wall",
                "-Wextra",
                "-Wno-unused-parameter",
                "-fvisibility=hidden",  # only PyInit__media leaves the .so
            ],
            libraries=["m"],
        )
    ]
)
