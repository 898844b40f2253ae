//! Activation checkpointing: a training step's forward that keeps only each decoder layer's input
//! and recomputes the layer during the backward. The plain backward holds every layer's
//! intermediates (norms, projections, attention, MLP) at once. Here they exist for one layer at a
//! time, so activation memory is one hidden state per layer plus part of one layer's
//! intermediates, for the price of a second forward through the layers.
//!
//! The backward runs layer by layer, from the last to the first. The loss's backward gives the
//! gradient at the last layer's output. Each layer is then recomputed from its saved input, and the
//! backward of `Σ output · upstream` gives that layer's weight gradients and the gradient at its
//! input. The weight gradients equal the plain path's up to the order of floating-point sums.
//!
//! Inside a layer, the MLP half (four times the hidden width, most of a layer's intermediates)
//! treats every token on its own. It runs, forward and backward, on at most
//! [`Checkpointing::mlp_chunk_tokens`] tokens at a time, so what a layer holds at once stops
//! growing with the MLP's width times the sequence. The first forward records no graph at all.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, TensorId, Var};

use crate::model::{AttentionMask, Decoder, ModelError, Result};

/// Activation checkpointing's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointing {
    /// The most tokens the MLP half of a layer runs on at once, in the forward and in the
    /// recompute (at least 1).
    pub mlp_chunk_tokens: usize,
}

impl Default for Checkpointing {
    /// Chunks of 1,024 tokens: large enough for the matmuls to run at full speed.
    fn default() -> Self {
        Checkpointing {
            mlp_chunk_tokens: 1024,
        }
    }
}

impl Checkpointing {
    /// The default settings when `enabled` (a trainer's `gradient_checkpointing` flag), else none.
    pub fn when(enabled: bool) -> Option<Self> {
        enabled.then(Self::default)
    }
}

/// A loss computed from a decoder's final hidden states, with the gradient of the loss with
/// respect to every weight of the decoder.
pub struct LossAndGradients<T> {
    /// The scalar loss the gradients are of (detached).
    pub loss: Tensor,
    /// Whatever else the head returned. A tensor still on the graph keeps the activations alive,
    /// so the head should detach what it returns here.
    pub extra: T,
    /// The gradients, keyed by the decoder's weight tensors (detached).
    pub grads: GradStore,
}

/// Runs `model` on `ids` at `positions` and `head` on its final hidden states, then computes the
/// gradients of the loss that `head` returns. With `checkpointing`, only each layer's input is
/// held during the forward (see the module docs); without, the layers' graph is kept and
/// backpropagated at once. Either way the embedding lookup's gradient is added last, in place
/// when it can be (see [`add_embedding_gradient`]).
pub fn loss_and_gradients<T>(
    model: &Decoder,
    ids: &Tensor,
    positions: &Tensor,
    mask: Option<&AttentionMask>,
    checkpointing: Option<Checkpointing>,
    head: impl FnOnce(&Tensor) -> Result<(Tensor, T)>,
) -> Result<LossAndGradients<T>> {
    let (cos, sin) = model.rope_tables(positions)?;
    let rope = (&cos, &sin);
    let embedded = model.embed(ids)?.detach();
    let (loss, extra, mut grads, upstream) = match checkpointing {
        None => plain_backward(model, embedded, rope, mask, head)?,
        Some(checkpointing) => {
            checkpointed_backward(model, embedded, rope, mask, checkpointing, head)?
        }
    };
    add_embedding_gradient(model, ids, &upstream, &mut grads)?;
    Ok(LossAndGradients { loss, extra, grads })
}

/// What a backward through the layers gives: the loss (detached), the head's extra output, the
/// weights' gradients, and the gradient at the embeddings.
type LayersBackward<T> = (Tensor, T, GradStore, Tensor);

/// The plain path: every layer's graph from the embeddings up, one backward.
fn plain_backward<T>(
    model: &Decoder,
    embedded: Tensor,
    rope: (&Tensor, &Tensor),
    mask: Option<&AttentionMask>,
    head: impl FnOnce(&Tensor) -> Result<(Tensor, T)>,
) -> Result<LayersBackward<T>> {
    let embedded = Var::from_tensor(&embedded)?;
    let mut x = embedded.as_tensor().clone();
    for layer in 0..model.config().num_hidden_layers {
        x = model.layer_forward(layer, &x, rope, mask)?;
    }
    let (loss, extra) = head(&model.final_norm(&x)?)?;
    drop(x);
    let mut grads = detached(loss.backward()?);
    let upstream = take_input_gradient(&mut grads, &embedded, "the first layer")?;
    Ok((loss.detach(), extra, grads, upstream))
}

/// The checkpointed path (see the module docs).
fn checkpointed_backward<T>(
    model: &Decoder,
    embedded: Tensor,
    rope: (&Tensor, &Tensor),
    mask: Option<&AttentionMask>,
    checkpointing: Checkpointing,
    head: impl FnOnce(&Tensor) -> Result<(Tensor, T)>,
) -> Result<LayersBackward<T>> {
    let chunk = checkpointing.mlp_chunk_tokens.max(1);
    let layers = model.config().num_hidden_layers;
    // The forward needs no graph: the same weights, detached, record none, so each intermediate
    // is freed as soon as the next one exists. Only each layer's input is kept.
    let untracked = model.detached()?;
    let mut inputs = Vec::with_capacity(layers);
    let mut x = embedded;
    for layer in 0..layers {
        let mid = untracked.attention_block(layer, &x, rope, mask)?;
        let output = by_token_chunks(&mid, chunk, |part| untracked.mlp_block(layer, part))?;
        inputs.push(x);
        x = output;
    }
    drop(untracked);
    let last = Var::from_tensor(&x)?;
    drop(x);
    let (loss, extra) = head(&model.final_norm(last.as_tensor())?)?;
    let mut grads = detached(loss.backward()?);
    let mut upstream = take_input_gradient(&mut grads, &last, "the final norm")?;
    drop(last);
    while let Some(input) = inputs.pop() {
        let layer = inputs.len();
        let input = Var::from_tensor(&input)?;
        let mid = model.attention_block(layer, input.as_tensor(), rope, mask)?;
        let mid_upstream =
            mlp_block_backward(model, layer, &mid.detach(), &upstream, chunk, &mut grads)?;
        let mut layer_grads = detached((mid * mid_upstream)?.sum_all()?.backward()?);
        upstream = take_input_gradient(&mut layer_grads, &input, &format!("layer {layer}"))?;
        grads.extend(layer_grads)?;
    }
    Ok((loss.detach(), extra, grads, upstream))
}

/// Adds the gradient of `model`'s embedding lookup of `ids` `[B, T]`, given the gradient
/// `upstream` at the embeddings, into `grads`.
///
/// When the embedding table is itself a variable, row `ids[i]` of its gradient gains
/// `upstream[i]`, in token order and in place: with a tied output projection the head has already
/// given the table a gradient. The lookup's own gradient as a separate tensor (what candle's
/// backward makes) would be a second `[vocab, hidden]` tensor and the sum of the two a third,
/// 0.5 GiB each at Qwen2.5-0.5B's shape in f32. When the table is a cast of the variables
/// (training that computes in bf16), the lookup is backpropagated through the cast instead.
fn add_embedding_gradient(
    model: &Decoder,
    ids: &Tensor,
    upstream: &Tensor,
    grads: &mut GradStore,
) -> Result<()> {
    let table = model.embedding();
    if !table.is_variable() {
        let lookup = (model.embed(ids)? * upstream)?.sum_all()?;
        grads.extend(detached(lookup.backward()?))?;
        return Ok(());
    }
    let hidden = table.dim(1)?;
    let rows = upstream.reshape(((), hidden))?.contiguous()?;
    let index = ids
        .flatten_all()?
        .unsqueeze(1)?
        .broadcast_as(rows.shape())?
        .contiguous()?;
    let gradient = match grads.remove(table) {
        Some(gradient) if gradient.is_contiguous() => gradient,
        Some(gradient) => gradient.contiguous()?,
        None => table.zeros_like()?,
    };
    gradient.scatter_add_set(&index, &rows, 0)?;
    grads.insert(table, gradient);
    Ok(())
}

/// `stage` applied to the tokens of `x` `[B, T, hidden]` at most `chunk` at a time, the results
/// joined back into `[B, T, hidden]`. Only for a stage that treats every token on its own.
fn by_token_chunks(
    x: &Tensor,
    chunk: usize,
    stage: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    if b * t <= chunk {
        return stage(x);
    }
    let tokens = x.reshape((1, b * t, d))?;
    let parts = crate::ops::spans(b * t, chunk)
        .map(|(start, len)| stage(&tokens.narrow(1, start, len)?))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 1)?.reshape((b, t, d))?)
}

/// The backward of layer `layer`'s MLP half at its input `mid` (detached), given the gradient
/// `upstream` at its output: recomputed `chunk` tokens at a time, the weight gradients added into
/// `grads`. Returns the gradient at `mid`.
fn mlp_block_backward(
    model: &Decoder,
    layer: usize,
    mid: &Tensor,
    upstream: &Tensor,
    chunk: usize,
    grads: &mut GradStore,
) -> Result<Tensor> {
    let (b, t, d) = mid.dims3()?;
    let tokens = mid.reshape((1, b * t, d))?;
    let upstream = upstream.reshape((1, b * t, d))?;
    let stage = format!("layer {layer}'s MLP");
    let mut input_grads = Vec::with_capacity((b * t).div_ceil(chunk));
    for (start, len) in crate::ops::spans(b * t, chunk) {
        let part = Var::from_tensor(&tokens.narrow(1, start, len)?)?;
        let output = model.mlp_block(layer, part.as_tensor())?;
        let product = (output * upstream.narrow(1, start, len)?)?;
        let mut part_grads = detached(product.sum_all()?.backward()?);
        input_grads.push(take_input_gradient(&mut part_grads, &part, &stage)?);
        grads.extend(part_grads)?;
    }
    Ok(Tensor::cat(&input_grads, 1)?.reshape((b, t, d))?)
}

/// `grads` with every gradient detached. candle's backward leaves the weights' gradients attached
/// to the graph of the backward itself (a matmul's weight gradient records the activation it was
/// computed from), so a kept gradient would keep its layer's activations alive.
fn detached(grads: GradStore) -> GradStore {
    let ids: Vec<TensorId> = grads.get_ids().copied().collect();
    let mut out = GradStore::default();
    for id in ids {
        if let Some(grad) = grads.get_id(id) {
            out.insert_id(id, grad.detach());
        }
    }
    out
}

/// Removes from `grads` the gradient at `input`, the leaf a stage was recomputed from.
fn take_input_gradient(grads: &mut GradStore, input: &Var, stage: &str) -> Result<Tensor> {
    grads.remove(input.as_tensor()).ok_or_else(|| {
        ModelError::Invalid(format!(
            "activation checkpointing: no gradient reached the input of {stage}"
        ))
    })
}
