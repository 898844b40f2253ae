//! Activation checkpointing: a training step's forward that keeps only each decoder layer's input
//! and recomputes the layer during the backward. The plain backward holds every layer's
//! intermediates (norms, projections, attention, MLP) at once. Here they exist for one layer at a
//! time, so activation memory is one hidden state per layer plus one layer's intermediates, for the
//! price of a second forward through the layers.
//!
//! The backward runs layer by layer, from the last to the first. The loss's backward gives the
//! gradient at the last layer's output. Each layer is then recomputed from its saved input, and the
//! backward of `Σ output · upstream` gives that layer's weight gradients and the gradient at its
//! input. The weight gradients equal the plain path's up to the order of floating-point sums.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, TensorId, Var};

use crate::model::{AttentionMask, Decoder, ModelError, Result};

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
/// gradients of the loss that `head` returns. With `recompute_layers`, activation checkpointing
/// holds only each layer's input during the forward (see the module docs). Otherwise this is the
/// plain `forward` then `backward()`.
pub fn loss_and_gradients<T>(
    model: &Decoder,
    ids: &Tensor,
    positions: &Tensor,
    mask: Option<&AttentionMask>,
    recompute_layers: bool,
    head: impl FnOnce(&Tensor) -> Result<(Tensor, T)>,
) -> Result<LossAndGradients<T>> {
    if !recompute_layers {
        let hidden = model.forward(ids, positions, mask, None)?;
        let (loss, extra) = head(&hidden)?;
        let grads = detached(loss.backward()?);
        let loss = loss.detach();
        return Ok(LossAndGradients { loss, extra, grads });
    }
    let embedded = model.embed(ids)?;
    let (cos, sin) = model.rope_tables(positions)?;
    let rope = (&cos, &sin);
    let layers = model.config().num_hidden_layers;
    // Each layer's input, detached: a layer's intermediates are freed once its output exists.
    let mut inputs = Vec::with_capacity(layers);
    let mut x = embedded.detach();
    for layer in 0..layers {
        let output = model.layer_forward(layer, &x, rope, mask)?.detach();
        inputs.push(x);
        x = output;
    }
    let last = Var::from_tensor(&x)?;
    drop(x);
    let (loss, extra) = head(&model.final_norm(last.as_tensor())?)?;
    let mut grads = detached(loss.backward()?);
    let loss = loss.detach();
    let mut upstream = take_input_gradient(&mut grads, &last, "the final norm")?;
    drop(last);
    while let Some(input) = inputs.pop() {
        let layer = inputs.len();
        let input = Var::from_tensor(&input)?;
        let output = model.layer_forward(layer, input.as_tensor(), rope, mask)?;
        let mut layer_grads = detached((output * &upstream)?.sum_all()?.backward()?);
        upstream = take_input_gradient(&mut layer_grads, &input, &format!("layer {layer}"))?;
        grads.extend(layer_grads)?;
    }
    grads.extend(detached((embedded * &upstream)?.sum_all()?.backward()?))?;
    Ok(LossAndGradients { loss, extra, grads })
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
