"""The same small GPT in Flax NNX with embeddings_jax: train it to count, decode greedily.

``embeddings_jax.nnx.TokenAndPositionEmbed`` is the input layer, flax's
``nnx.MultiHeadAttention`` the attention, and the logits are tied to the token table.
For decoding, a second model built with ``decode=True`` takes the trained parameters
(``nnx.update``); its embedding keeps the position in an ``nnx.Cache`` and flax's
attention keeps the keys and values (``init_cache``).

    pip install embeddings-jax optax
    python examples/nnx_gpt.py [--steps 300] [--small]
"""

import argparse

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import embeddings_jax.nnx as ejn


class Block(nnx.Module):
    def __init__(self, features, num_heads, *, decode=False, rngs):
        self.ln_attn = nnx.LayerNorm(features, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads, features, decode=decode, rngs=rngs)
        self.ln_mlp = nnx.LayerNorm(features, rngs=rngs)
        self.mlp_in = nnx.Linear(features, 4 * features, rngs=rngs)
        self.mlp_out = nnx.Linear(4 * features, features, rngs=rngs)

    def __call__(self, x, mask):
        x = x + self.attn(self.ln_attn(x), mask=mask)
        return x + self.mlp_out(nnx.gelu(self.mlp_in(self.ln_mlp(x))))


class GPT(nnx.Module):
    def __init__(self, vocab_size, features, num_heads, num_layers, max_len, *, decode=False, rngs):
        self.decode = decode
        self.embed = ejn.TokenAndPositionEmbed(
            vocab_size,
            features,
            max_len=max_len,
            scale=features**0.5,
            embedding_init=nnx.initializers.normal(features**-0.5),
            decode=decode,
            rngs=rngs,
        )
        self.blocks = nnx.List(
            [Block(features, num_heads, decode=decode, rngs=rngs) for _ in range(num_layers)]
        )
        self.ln_final = nnx.LayerNorm(features, rngs=rngs)

    def __call__(self, ids):
        x = self.embed(ids)
        mask = None if self.decode else nnx.make_causal_mask(ids)  # decoding: the cache masks
        for block in self.blocks:
            x = block(x, mask)
        return self.embed.attend(self.ln_final(x))  # tied output logits


def counting_batch(key, batch, length, vocab_size):
    """Rows ``s, s+1, s+2, ... (mod vocab)``: inputs and next-token targets."""
    start = jax.random.randint(key, (batch, 1), 0, vocab_size)
    seq = (start + jnp.arange(length + 1)) % vocab_size
    return seq[:, :-1], seq[:, 1:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--small", action="store_true", help="tiny sizes (for tests)")
    args = parser.parse_args(argv)
    d, heads, layers, max_len, batch = (16, 2, 1, 16, 8) if args.small else (64, 4, 2, 32, 32)
    config = dict(vocab_size=16, features=d, num_heads=heads, num_layers=layers, max_len=max_len)
    model = GPT(**config, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, key):
        ids, targets = counting_batch(key, batch, max_len, 16)

        def loss_fn(model):
            logits = model(ids)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    for step, key in enumerate(jax.random.split(jax.random.key(2), args.steps)):
        loss = train_step(model, optimizer, key)
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {float(loss):.3f}")

    # Greedy decoding, one token per call, in a decode=True copy of the trained model.
    decoder = GPT(**config, decode=True, rngs=nnx.Rngs(0))
    nnx.update(decoder, nnx.state(model, nnx.Param))
    for block in decoder.blocks:
        block.attn.init_cache((1, max_len, d))

    @nnx.jit
    def decode_step(decoder, token):
        return jnp.argmax(decoder(token)[:, -1], axis=-1)

    prompt = [3, 4, 5]
    out = list(prompt)
    for t in range(max_len - 1):
        next_token = decode_step(decoder, jnp.array([[out[t]]], jnp.int32))
        if t + 1 >= len(out):
            out.append(int(next_token[0]))
    print("prompt", prompt, "-> decoded", out[len(prompt) :])
    return out


if __name__ == "__main__":
    main()
