"""Caption decoding for `BlipCaptioner` as one jitted program per setting.

`decode(model, variables, images, prompt_ids, strategy=..., ...)` encodes the images once,
runs the prompt through the decoder in one cached step, then one position per step of a
`jax.lax.while_loop` (stopping early when every sequence has ended), with the decoder's
keys/values in a cache (`BlipCaptioner.decode_step`). Conventions are BLIP's / HF
`generate`'s:
- a sequence is `prompt_ids` (BLIP: [DEC] + the prompt's word pieces, no [SEP]) followed by
  generated tokens; `max_length` and `min_length` count the prompt;
- [SEP] (`eos_id`) ends a sequence; its logit is -inf while fewer than `min_length` tokens
  exist (HF MinLengthLogitsProcessor); everything after it is `pad_id`;
- sampling applies, in HF's order, temperature, then top-k (ties with the k-th logit kept),
  then top-p (the most probable tokens whose mass reaches p, at least one);
- beam search is HF's (transformers 5 `_beam_search`, `early_stopping=False`): 2 x beams
  candidates per step, finished hypotheses scored by sum log-prob / generated length **
  length_penalty, the best kept.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from dllab_jax.models.captioner import init_cache, reorder_cache

STRATEGIES = ("greedy", "top_k", "top_p", "beam")
_NEG = -1.0e9  # HF's "impossible" score in beam search (finite, so sums stay ordered)


def decode(
    model,
    variables,
    images,
    prompt_ids,
    *,
    strategy: str = "greedy",
    max_length: int = 30,
    min_length: int = 0,
    top_k: int = 50,
    top_p: float = 1.0,
    temperature: float = 1.0,
    num_beams: int = 3,
    length_penalty: float = 1.0,
    eos_id: int,
    pad_id: int,
    rng: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Generates token sequences for a batch of images.

    Args:
      model: a `BlipCaptioner` (static: its sizes shape the program).
      variables: {"params": ...}.
      images: [B, H, W, 3] float32, normalised as the model expects.
      prompt_ids: [P] int, the prompt for every image, starting with the BOS ([DEC]) id;
        P < max_length.
      strategy: "greedy", "top_k" (sampling among the top_k logits), "top_p" (nucleus
        sampling with top_p) or "beam" (num_beams beams).
      max_length: tokens per sequence, prompt included (static).
      min_length: no EOS while the sequence has fewer tokens than this (static).
      top_k: "top_k": tokens kept (traced: changing it does not recompile).
      top_p: "top_p": probability mass kept (traced).
      temperature: sampling: logits are divided by it (traced).
      num_beams: "beam": beams per image (static).
      length_penalty: "beam": exponent of the generated length dividing a hypothesis'
        log-probability (traced).
      eos_id: the end token ([SEP]).
      pad_id: written after the end token.
      rng: a jax key; needed for sampling (position i uses fold_in(rng, i)).

    Returns:
      (tokens [B, max_length] int32: the prompt, the generated tokens, EOS, then pad_id;
       lengths [B] int32: tokens up to and including EOS, max_length where none).
    """
    prompt_ids = jnp.asarray(prompt_ids)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown decoding strategy {strategy!r}; use one of {STRATEGIES}")
    if prompt_ids.ndim != 1 or not 1 <= prompt_ids.shape[0] < max_length:
        raise ValueError(
            f"prompt_ids must be [P] with 1 <= P < max_length={max_length}, got shape "
            f"{prompt_ids.shape}"
        )
    if strategy in ("top_k", "top_p") and rng is None:
        raise ValueError(f"strategy {strategy!r} samples: give rng")
    if rng is None:
        rng = jax.random.key(0)  # unused by greedy and beam search
    if strategy != "top_k":
        top_k = 0  # off
    if strategy != "top_p":
        top_p = 1.0  # off
    return _decode(
        model,
        variables,
        images,
        prompt_ids,
        rng,
        jnp.asarray(top_k, jnp.int32),
        jnp.asarray(top_p, jnp.float32),
        jnp.asarray(temperature, jnp.float32),
        jnp.asarray(length_penalty, jnp.float32),
        # top_k and top_p share one sampling program (their filters are traced numbers).
        mode="sample" if strategy in ("top_k", "top_p") else strategy,
        max_length=max_length,
        min_length=min_length,
        num_beams=num_beams if strategy == "beam" else 1,
        eos_id=eos_id,
        pad_id=pad_id,
    )


@functools.partial(
    jax.jit,
    static_argnames=("model", "mode", "max_length", "min_length", "num_beams", "eos_id",
                     "pad_id"),
)  # fmt: skip
def _decode(
    model,
    variables,
    images,
    prompt_ids,
    rng,
    top_k,
    top_p,
    temperature,
    length_penalty,
    *,
    mode,
    max_length,
    min_length,
    num_beams,
    eos_id,
    pad_id,
):
    params = {"params": variables["params"]}
    image_tokens = model.apply(params, images, method="encode_image")
    if mode == "beam":
        image_tokens = jnp.repeat(image_tokens, num_beams, axis=0)  # row b * beams + k
    batch = image_tokens.shape[0]

    def step(ids, cache, tokens=None):
        """Logits [B, V] after the last of ids [B, T], and the updated cache."""
        logits, updated = model.apply(
            {**params, "cache": cache}, ids, tokens, method="decode_step", mutable=["cache"]
        )
        return logits[:, -1], updated["cache"]

    prompt = jnp.broadcast_to(prompt_ids.astype(jnp.int32), (batch, prompt_ids.shape[0]))
    logits, cache = step(prompt, init_cache(model, batch, max_length), image_tokens)

    def no_early_eos(logits, length):
        """HF MinLengthLogitsProcessor: EOS impossible while length < min_length."""
        forbid = (jnp.arange(logits.shape[-1]) == eos_id) & (length < min_length)
        return jnp.where(forbid, -jnp.inf, logits)

    if mode == "beam":
        tokens = _beam_search(
            step, logits, cache, prompt, no_early_eos, length_penalty, num_beams, max_length,
            eos_id, pad_id,
        )  # fmt: skip
    else:
        tokens = _sample_loop(
            step, logits, cache, prompt, no_early_eos, rng, top_k, top_p, temperature,
            greedy=mode == "greedy", max_length=max_length, eos_id=eos_id, pad_id=pad_id,
        )  # fmt: skip
    return _finish(tokens, prompt_ids.shape[0], eos_id, pad_id)


def _finish(tokens, prompt_length, eos_id, pad_id):
    """pad_id after the first generated EOS; lengths up to and including it."""
    max_length = tokens.shape[1]
    positions = jnp.arange(max_length)
    is_eos = (tokens == eos_id) & (positions >= prompt_length)
    last = jnp.where(is_eos.any(axis=1), jnp.argmax(is_eos, axis=1), max_length - 1)
    tokens = jnp.where(positions[None] > last[:, None], pad_id, tokens)
    return tokens.astype(jnp.int32), (last + 1).astype(jnp.int32)


def filter_logits(logits, top_k, top_p, temperature):
    """Sampling logits as HF's warpers make them: /temperature, top-k, then top-p.

    Args:
      logits: [B, V] float32.
      top_k: int scalar; 0 = no top-k filter. Ties with the k-th largest logit are kept.
      top_p: float scalar; 1.0 = no nucleus filter. Keeps the most probable tokens whose
        probability mass before them is below top_p (so at least the best one; tokens tied
        with the last one kept are kept too).
      temperature: float scalar > 0.

    Returns:
      [B, V] logits with the removed tokens at -inf.
    """
    logits = logits / temperature
    ordered = jnp.sort(logits, axis=-1)[:, ::-1]  # descending
    vocab = logits.shape[-1]
    kth = jnp.take(ordered, jnp.clip(top_k, 1, vocab) - 1, axis=-1)[:, None]
    keep = (top_k <= 0) | (logits >= kth)
    logits = jnp.where(keep, logits, -jnp.inf)
    ordered = jnp.where((top_k <= 0) | (ordered >= kth), ordered, -jnp.inf)
    probs = jax.nn.softmax(ordered, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # The smallest logit still kept by the nucleus, as a threshold on the unsorted logits.
    kept = (mass_before < top_p) | (top_p >= 1.0)
    threshold = jnp.min(jnp.where(kept, ordered, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits >= threshold, logits, -jnp.inf)


def _sample_loop(
    step, logits, cache, prompt, no_early_eos, rng, top_k, top_p, temperature, *, greedy,
    max_length, eos_id, pad_id,
):  # fmt: skip
    """Greedy or sampled decoding, one position per while-loop iteration."""
    batch, prompt_length = prompt.shape
    tokens = jnp.full((batch, max_length), pad_id, jnp.int32).at[:, :prompt_length].set(prompt)
    done = jnp.zeros((batch,), bool)

    def pick(logits, position):
        logits = no_early_eos(logits, position)
        if greedy:
            return jnp.argmax(logits, axis=-1)
        filtered = filter_logits(logits, top_k, top_p, temperature)
        return jax.random.categorical(jax.random.fold_in(rng, position), filtered, axis=-1)

    def body(state):
        position, tokens, logits, cache, done = state
        token = jnp.where(done, pad_id, pick(logits, position)).astype(jnp.int32)
        tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, position))
        done = done | (token == eos_id)
        more = (position + 1 < max_length) & ~done.all()
        # The last position needs no logits after it.
        logits, cache = jax.lax.cond(
            more, lambda: step(token[:, None], cache), lambda: (logits, cache)
        )
        return position + 1, tokens, logits, cache, done

    def cond(state):
        position, *_, done = state
        return (position < max_length) & ~done.all()

    state = (jnp.asarray(prompt_length, jnp.int32), tokens, logits, cache, done)
    return jax.lax.while_loop(cond, body, state)[1]


def _beam_search(
    step, logits, cache, prompt, no_early_eos, length_penalty, num_beams, max_length, eos_id,
    pad_id,
):  # fmt: skip
    """HF's beam search (transformers 5 `_beam_search`, early_stopping=False), vectorised.

    Rows of `prompt`, `logits` and `cache` are image b, beam k at b * num_beams + k.
    Returns the best finished hypothesis per image, [B, max_length].
    """
    rows, prompt_length = prompt.shape
    batch, beams, candidates = rows // num_beams, num_beams, 2 * num_beams
    vocab = logits.shape[-1]
    running = jnp.full((batch, beams, max_length), pad_id, jnp.int32)
    running = running.at[:, :, :prompt_length].set(prompt.reshape(batch, beams, -1))
    # Only beam 0 starts alive, so the first step does not pick the same token K times.
    running_scores = jnp.zeros((batch, beams)).at[:, 1:].set(_NEG)
    state = dict(
        length=jnp.asarray(prompt_length, jnp.int32),
        logits=logits,
        cache=cache,
        running=running,
        running_scores=running_scores,
        finished=running,
        finished_scores=jnp.full((batch, beams), _NEG),
        is_finished=jnp.zeros((batch, beams), bool),
        improvable=jnp.ones((batch,), bool),
    )

    def gather(x, index):
        """x [batch, n, ...] at index [batch, m] along axis 1 -> [batch, m, ...]."""
        return jnp.take_along_axis(x, index.reshape(*index.shape, *[1] * (x.ndim - 2)), axis=1)

    def body(s):
        length = s["length"]
        log_probs = no_early_eos(jax.nn.log_softmax(s["logits"], axis=-1), length)
        log_probs = log_probs.reshape(batch, beams, vocab) + s["running_scores"][..., None]
        top_scores, top_index = jax.lax.top_k(log_probs.reshape(batch, beams * vocab), candidates)
        parent, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
        sequences = gather(s["running"], parent)
        sequences = jax.lax.dynamic_update_slice(sequences, token[..., None], (0, 0, length))
        ends = (token == eos_id) | (length + 1 >= max_length)

        # Beams that go on: the best candidates that did not end.
        alive_scores = top_scores + ends * _NEG
        _, keep = jax.lax.top_k(alive_scores, beams)
        running = gather(sequences, keep)
        running_scores = gather(alive_scores, keep)
        running_parent = gather(parent, keep)

        # Hypotheses that end now (among the top `beams` candidates), length-normalised.
        just_finished = ends & (jnp.arange(candidates) < beams)
        scores = top_scores / (length + 1 - prompt_length).astype(jnp.float32) ** length_penalty
        scores = scores + (~s["improvable"])[:, None] * _NEG + (~just_finished) * _NEG
        merged = jnp.concatenate([s["finished"], sequences], axis=1)
        merged_scores = jnp.concatenate([s["finished_scores"], scores], axis=1)
        merged_flags = jnp.concatenate([s["is_finished"], just_finished], axis=1)
        _, best = jax.lax.top_k(merged_scores, beams)

        length = length + 1
        finished_scores = gather(merged_scores, best)
        is_finished = gather(merged_flags, best)
        # HF's heuristic: stop an image once its best running beam, scored at the current
        # length, cannot beat its worst finished hypothesis.
        best_running = running_scores[:, 0] / (length - prompt_length).astype(jnp.float32) ** (
            length_penalty
        )
        worst = jnp.where(is_finished, finished_scores.min(axis=1, keepdims=True), _NEG)
        improvable = s["improvable"] & (best_running[:, None] > worst).any(axis=1)

        rows_index = (jnp.arange(batch)[:, None] * beams + running_parent).reshape(-1)
        cache = reorder_cache(s["cache"], rows_index)
        more = (length < max_length) & improvable.any()
        logits, cache = jax.lax.cond(
            more,
            lambda: step(running[:, :, length - 1].reshape(-1, 1), cache),
            lambda: (s["logits"], cache),
        )
        return dict(
            length=length,
            logits=logits,
            cache=cache,
            running=running,
            running_scores=running_scores,
            finished=gather(merged, best),
            finished_scores=finished_scores,
            is_finished=is_finished,
            improvable=improvable,
        )

    def cond(s):
        return (s["length"] < max_length) & s["improvable"].any()

    state = jax.lax.while_loop(cond, body, state)
    return state["finished"][:, 0]
