#!/usr/bin/env python3
"""Creates a deterministic file tree for the file-integrity-monitoring benchmark: the same
tree is hashed by the agent's baseline build, by `aide --init` and by `sha256sum`
(see fim-peers.sh), so their times and memory can be compared.

Usage: fim-tree.py DIR [--files 100000] [--bytes 2200000000] [--seed 1]
       (the FIM benchmark uses the defaults: fim-tree.py /tmp/bench/fimtree)

DIR must not exist or be empty. The tree holds exactly --files regular files, about 100 to
a directory, three directory levels deep (DIR/d03/d07/d01/f0031234.conf). Sizes are drawn
from a seeded PRNG: about 1% empty files; the rest log-normal with a mean of about 22 KB
(median about 9 KB, capped at 1 MiB); one file in 5,000 large (log-uniform, 1 to 50 MiB).
If the total is still below --bytes, more small files are turned into large ones until it
is reached, so the tree totals at least --bytes. Contents are slices of one 64 MiB buffer of
seeded random bytes taken at random offsets: not all zeros, not compressible, and fast to
write. The same arguments give byte-identical file names, sizes and contents.
"""
import argparse
import math
import os
import random
import sys

FILES_PER_DIR = 100
DEPTH = 3
SMALL_MEAN = 22_000
SMALL_SIGMA = 1.3
SMALL_MAX = 1 << 20
LARGE_MIN, LARGE_MAX = SMALL_MAX + 1, 50 << 20  # large files are all > SMALL_MAX
LARGE_EVERY = 5000
EMPTY_SHARE = 0.01
BUFFER_SIZE = 64 << 20
EXTENSIONS = (".conf", ".so", ".py", ".txt", ".log", ".bin", ".json", "")


def plan_sizes(rng: random.Random, files: int, target: int) -> list[int]:
    if target > files * LARGE_MAX:
        sys.exit(f"{files} files of at most {LARGE_MAX} bytes cannot hold {target} bytes")
    mu = math.log(SMALL_MEAN) - SMALL_SIGMA**2 / 2  # mean of the log-normal = SMALL_MEAN
    sizes = []
    for _ in range(files):
        roll = rng.random()
        if roll < EMPTY_SHARE:
            sizes.append(0)
        elif roll < EMPTY_SHARE + 1 / LARGE_EVERY:
            sizes.append(large_size(rng))
        else:
            sizes.append(min(SMALL_MAX, int(rng.lognormvariate(mu, SMALL_SIGMA))))
    total = sum(sizes)
    while total < target:  # top up: turn random small files into large ones
        i = rng.randrange(files)
        if sizes[i] <= SMALL_MAX:
            new = large_size(rng)
            total += new - sizes[i]
            sizes[i] = new
    return sizes


def large_size(rng: random.Random) -> int:
    return int(math.exp(rng.uniform(math.log(LARGE_MIN), math.log(LARGE_MAX))))


def file_path(root: str, index: int, fanout: int, ext: str) -> str:
    leaf = index // FILES_PER_DIR
    parts = []
    for _ in range(DEPTH):
        leaf, digit = divmod(leaf, fanout)
        parts.append(f"d{digit:02d}")
    return os.path.join(root, *reversed(parts), f"f{index:07d}{ext}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--bytes", type=int, default=2_200_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if os.path.isdir(args.dir) and os.listdir(args.dir):
        sys.exit(f"{args.dir} exists and is not empty")

    rng = random.Random(args.seed)
    sizes = plan_sizes(rng, args.files, args.bytes)
    buffer = memoryview(rng.randbytes(BUFFER_SIZE))
    leaves = math.ceil(args.files / FILES_PER_DIR)
    fanout = max(1, math.ceil(leaves ** (1 / DEPTH) - 1e-9))

    made = set()
    for index, size in enumerate(sizes):
        path = file_path(args.dir, index, fanout, EXTENSIONS[rng.randrange(len(EXTENSIONS))])
        parent = os.path.dirname(path)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            offset = rng.randrange(BUFFER_SIZE)
            while size > 0:  # wrap around the buffer for files larger than what is left
                chunk = buffer[offset : offset + size]
                written = os.write(fd, chunk)
                size -= written
                offset = (offset + written) % BUFFER_SIZE
        finally:
            os.close(fd)

    small = [s for s in sizes if s <= SMALL_MAX]
    large = [s for s in sizes if s > SMALL_MAX]
    print(
        f"{args.dir}: {len(sizes)} files in {len(made)} directories, {sum(sizes)} bytes; "
        f"{len(small)} small (mean {sum(small) // max(1, len(small))} B), "
        f"{len(large)} large (largest {max(large, default=0)} B)"
    )


if __name__ == "__main__":
    main()
