"""Minimal reproduction: inductor's own CPU random numbers are slower than torch's.

One reparameterised draw of a 256 x 256 weight, eager, compiled with inductor's
defaults, and compiled with ``fallback_random=True`` (torch's kernels, what
``borch.compile_step`` uses). ``python -m benchmarks.compile_rng``.
"""

import statistics
import time

import torch


def draw(loc, scale):
    return loc + scale * torch.randn_like(loc)


def main() -> None:
    torch.set_num_threads(1)
    loc, scale = torch.zeros(256, 256), torch.ones(256, 256)
    variants = {
        "eager": draw,
        "inductor": torch.compile(draw),
        "inductor fallback_random": torch.compile(
            draw, options={"fallback_random": True}
        ),
    }
    for fn in variants.values():
        fn(loc, scale)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(7):  # blocks taken in turn
        for name, fn in variants.items():
            start = time.perf_counter()
            for _ in range(200):
                fn(loc, scale)
            times[name].append((time.perf_counter() - start) / 200 * 1e6)
    for name, block_times in times.items():
        print(f"{name:26s} {statistics.median(block_times):8.1f} us per draw")


if __name__ == "__main__":
    main()
