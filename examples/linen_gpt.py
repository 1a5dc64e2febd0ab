"""A small GPT in Flax linen with embeddings_jax: train it to count, then decode greedily.

The input layer is ``embeddings_jax.linen.TokenAndPositionEmbed`` (token rows scaled
by sqrt(d) plus a learned position table); the blocks use flax's own attention; the
output logits are tied to the token table (``embed.attend``). Decoding runs one token
per step with ``decode=True``: the embedding keeps its position in the ``"cache"``
collection, next to flax attention's key/value cache.

    pip install embeddings-jax optax
    python examples/linen_gpt.py [--steps 300] [--small]
"""

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import embeddings_jax.linen as ejl


class Block(nn.Module):
    features: int
    num_heads: int
    decode: bool = False

    @nn.compact
    def __call__(self, x, mask):
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(self.num_heads, decode=self.decode)(h, h, mask=mask)
        h = nn.Dense(4 * self.features)(nn.LayerNorm()(x))
        return x + nn.Dense(self.features)(nn.gelu(h))


class GPT(nn.Module):
    vocab_size: int
    features: int
    num_heads: int
    num_layers: int
    max_len: int
    decode: bool = False

    @nn.compact
    def __call__(self, ids):
        embed = ejl.TokenAndPositionEmbed(
            self.vocab_size,
            self.features,
            max_len=self.max_len,
            scale=self.features**0.5,
            embedding_init=nn.initializers.normal(self.features**-0.5),
            decode=self.decode,
        )
        x = embed(ids)
        mask = None if self.decode else nn.make_causal_mask(ids)  # decoding: the cache masks
        for _ in range(self.num_layers):
            x = Block(self.features, self.num_heads, self.decode)(x, mask)
        return embed.attend(nn.LayerNorm()(x))  # tied output logits


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
    model = GPT(vocab_size=16, features=d, num_heads=heads, num_layers=layers, max_len=max_len)

    ids, _ = counting_batch(jax.random.key(0), batch, max_len, 16)
    params = model.init(jax.random.key(1), ids)["params"]
    opt = optax.adam(3e-3)
    opt_state = opt.init(params)

    @jax.jit
    def train_step(params, opt_state, key):
        ids, targets = counting_batch(key, batch, max_len, 16)

        def loss_fn(p):
            logits = model.apply({"params": p}, ids)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    for step, key in enumerate(jax.random.split(jax.random.key(2), args.steps)):
        params, opt_state, loss = train_step(params, opt_state, key)
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {float(loss):.3f}")

    # Greedy decoding, one token per call. flax attention sizes its cache from the
    # input given to init, so initialise the decoder with a full-length batch.
    decoder = model.clone(decode=True)
    cache = decoder.init(jax.random.key(0), jnp.zeros((1, max_len), jnp.int32))["cache"]

    @jax.jit
    def decode_step(cache, token):
        logits, mutated = decoder.apply(
            {"params": params, "cache": cache}, token, mutable=["cache"]
        )
        return mutated["cache"], jnp.argmax(logits[:, -1], axis=-1)

    prompt = [3, 4, 5]
    out = list(prompt)
    for t in range(max_len - 1):
        token = jnp.array([[out[t]]], jnp.int32)
        cache, next_token = decode_step(cache, token)
        if t + 1 >= len(out):
            out.append(int(next_token[0]))
    print("prompt", prompt, "-> decoded", out[len(prompt) :])
    return out


if __name__ == "__main__":
    main()
