"""Training-step benchmark of embed_and_add against a copy and the baselines (see README).

Usage: python benchmarks/train_benchmark.py [--quick] [--sizes S3 decode S1 ...] [--rounds N]
       [--out DIR] [--no-write]
The same as `embeddings-jax bench --groups train`: results go to --out, else to
~/.cache/embeddings-jax/bench/<device>/ (printed); no existing file is overwritten, so the
committed results under benchmarks/results/ change only when copied there on purpose.
"""

import sys

from embeddings_jax.tools import cli

if __name__ == "__main__":
    sys.exit(cli.main(["bench", "--groups", "train", "--tag", "train", *sys.argv[1:]]))
