"""forward benchmark of embed_and_add against a copy and the baselines (see README).

Usage: python benchmarks/forward_benchmark.py [--sizes S1 S2 ...] [--rounds N] [--no-write]
Same as `embeddings-jax bench --groups forward`; results go to benchmarks/results/<device>/.
"""

import sys

from embeddings_jax.tools import cli

if __name__ == "__main__":
    sys.exit(cli.main(["bench", "--groups", "forward", "--tag", "forward", *sys.argv[1:]]))
