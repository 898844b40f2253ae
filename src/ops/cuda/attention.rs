//! Launches of `kernels/attention.cu`: the flash-style forward (online softmax, saves the row
//! log-sum-exp), and the backward as three kernels — `delta = rowsum(dO ⊙ O)`, then dK/dV
//! (one block per key tile) and dQ (one block per query tile), both recomputing the
//! probabilities from the saved log-sum-exp. No `T × Tk` buffer exists.

use super::{
    alloc, arg_or_null, config, contiguous, launch, ptx_module, storage, tensor_view, to_u32,
    with_float_type, zeros, Kernel, Module,
};
use crate::ops::attention::Spec;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaView, DeviceRepr, PushKernelArg};
use candle_core::{bail, CudaStorage, Layout, Result, Shape, Tensor};

/// The PTX of `kernels/attention.cu`.
pub(super) const MODULE: Module = ptx_module!("attention");

/// Keys per tile (`KEYS` in attention.cu).
const KEYS: u32 = 32;
/// Forward: warps per block and query rows per block (`FWD_WARPS`, `FWD_ROWS`).
const FWD_WARPS: u32 = 4;
const FWD_ROWS: u32 = 16;
/// Backward: warps per block and query rows per tile (`BWD_WARPS`, `BWD_ROWS`).
const BWD_WARPS: u32 = 8;
const BWD_ROWS: u32 = 16;
/// Largest head dim the kernels handle (32 lanes × `D_PER_LANE`).
const MAX_HEAD_DIM: usize = 256;
/// Largest grid y dimension (batch × heads).
const MAX_GRID_Y: usize = 65_535;

/// Sizes, scale and masking rule as the kernels take them; mirrors `AttnShape`.
#[repr(C)]
#[derive(Clone, Copy)]
struct AttentionShape {
    batch: u32,
    q_heads: u32,
    kv_heads: u32,
    q_len: u32,
    k_len: u32,
    head_dim: u32,
    scale: f32,
    causal: u32,
}

// SAFETY: plain old data with the C layout of the kernel's struct.
unsafe impl DeviceRepr for AttentionShape {}

impl AttentionShape {
    fn of(spec: &Spec, op: &str) -> Result<Self> {
        let g = &spec.geometry;
        if g.head_dim > MAX_HEAD_DIM {
            bail!(
                "{op}: head dim {} exceeds the cuda kernel's limit of {MAX_HEAD_DIM}",
                g.head_dim
            );
        }
        if g.batch * g.q_heads > MAX_GRID_Y {
            bail!(
                "{op}: batch × query heads = {} exceeds the cuda kernel's limit of {MAX_GRID_Y}",
                g.batch * g.q_heads
            );
        }
        Ok(Self {
            batch: to_u32(g.batch, op, "batch")?,
            q_heads: to_u32(g.q_heads, op, "query heads")?,
            kv_heads: to_u32(g.kv_heads, op, "kv heads")?,
            q_len: to_u32(g.q_len, op, "query length")?,
            k_len: to_u32(g.k_len, op, "key length")?,
            head_dim: g.head_dim as u32,
            scale: g.scale as f32,
            causal: u32::from(g.causal),
        })
    }

    fn q_rows(&self) -> usize {
        (self.batch * self.q_heads) as usize * self.q_len as usize
    }

    fn k_elems(&self) -> usize {
        (self.batch * self.kv_heads) as usize * self.k_len as usize * self.head_dim as usize
    }

    /// Dynamic shared memory of the forward kernel, in bytes.
    fn forward_shared(&self) -> u32 {
        let d = self.head_dim;
        4 * (FWD_ROWS * d + KEYS * (d + 1) + KEYS * d + FWD_WARPS * KEYS)
    }

    /// Dynamic shared memory of the dK/dV and dQ kernels, in bytes.
    fn backward_shared(&self) -> u32 {
        let d = self.head_dim;
        4 * (2 * BWD_ROWS * d + 2 * KEYS * (d + 1) + 2 * BWD_ROWS * KEYS + 2 * BWD_ROWS)
    }
}

/// The masks of `spec` as device views (absent masks stay `None`, passed as null).
struct MaskViews<'a> {
    key_padding: Option<CudaView<'a, u32>>,
    segment_ids: Option<CudaView<'a, u32>>,
}

/// Read guards of the mask tensors, which must outlive their [`MaskViews`].
type Guards<'a> = [Option<(candle_core::StorageRef<'a>, &'a Layout)>; 2];

fn mask_guards(spec: &Spec) -> Guards<'_> {
    [&spec.key_padding, &spec.segment_ids].map(|t| t.as_ref().map(Tensor::storage_and_layout))
}

fn mask_views<'a>(guards: &'a Guards<'_>, op: &str) -> Result<MaskViews<'a>> {
    let view = |i: usize, what: &str| -> Result<Option<CudaView<'a, u32>>> {
        match &guards[i] {
            Some((storage, layout)) => Ok(Some(tensor_view(storage, layout, op, what)?)),
            None => Ok(None),
        }
    };
    Ok(MaskViews {
        key_padding: view(0, "key_padding")?,
        segment_ids: view(1, "segment_ids")?,
    })
}

/// Forward on contiguous `q`, `k`, `v`: packed f32 `[o (B·Hq·T·D), lse (B·Hq·T)]`.
pub(in crate::ops) fn forward(
    op: &str,
    spec: &Spec,
    (qs, ql): (&CudaStorage, &Layout),
    (ks, kl): (&CudaStorage, &Layout),
    (vs, vl): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let shape = AttentionShape::of(spec, op)?;
    let rows = shape.q_rows();
    let d = shape.head_dim as usize;
    let out_len = rows * (d + 1);
    with_float_type!(qs.dtype(), op, T => {
        let dev = qs.device();
        let (q, k, v) = (contiguous::<T>(qs, ql, op)?, contiguous::<T>(ks, kl, op)?, contiguous::<T>(vs, vl, op)?);
        if rows == 0 || d == 0 {
            return Ok((storage(dev, zeros::<f32>(dev, out_len)?), Shape::from(out_len)));
        }
        let guards = mask_guards(spec);
        let masks = mask_views(&guards, op)?;
        let mut out = alloc::<f32>(dev, out_len)?;
        let (mut o, mut lse) = out.split_at_mut(rows * d);
        let kernel = Kernel::load_for::<T>(dev, &MODULE, "attention_fwd")?;
        let shared = shape.forward_shared();
        kernel.allow_shared_memory(shared)?;
        let grid = (
            to_u32(shape.q_len.div_ceil(FWD_ROWS) as usize, op, "grid")?,
            shape.batch * shape.q_heads,
        );
        let mut args = kernel.builder();
        args.arg(&q).arg(&k).arg(&v);
        arg_or_null(&mut args, &masks.key_padding);
        arg_or_null(&mut args, &masks.segment_ids);
        args.arg(&mut o).arg(&mut lse).arg(&shape);
        launch(args, config(grid, 32 * FWD_WARPS, shared))?;
        Ok((storage(dev, out), Shape::from(out_len)))
    })
}

/// Backward on contiguous `q`, `k`, `v`, with the forward's packed f32 output `saved` and its
/// gradient `grad`: packed `[dq, dk, dv]` in the dtype of `q`.
pub(in crate::ops) fn backward(
    op: &str,
    spec: &Spec,
    (saved, grad): (&Tensor, &Tensor),
    (qs, ql): (&CudaStorage, &Layout),
    (ks, kl): (&CudaStorage, &Layout),
    (vs, vl): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let shape = AttentionShape::of(spec, op)?;
    let rows = shape.q_rows();
    let d = shape.head_dim as usize;
    let (nq, nk) = (rows * d, shape.k_elems());
    let out_len = nq + 2 * nk;
    with_float_type!(qs.dtype(), op, T => {
        let dev = qs.device();
        let (q, k, v) = (contiguous::<T>(qs, ql, op)?, contiguous::<T>(ks, kl, op)?, contiguous::<T>(vs, vl, op)?);
        if rows == 0 || d == 0 {
            return Ok((storage(dev, zeros::<T>(dev, out_len)?), Shape::from(out_len)));
        }
        let (saved_guard, saved_layout) = saved.storage_and_layout();
        let saved = tensor_view::<f32>(&saved_guard, saved_layout, op, "the saved output")?;
        let (grad_guard, grad_layout) = grad.storage_and_layout();
        let grad = tensor_view::<f32>(&grad_guard, grad_layout, op, "the output gradient")?;
        if saved.len() < rows * (d + 1) || grad.len() < nq {
            bail!("{op}: saved output or gradient shorter than [o, lse] for q {:?}", ql.dims());
        }
        let (o, lse) = (saved.slice(0..nq), saved.slice(nq..nq + rows));
        let d_o = grad.slice(0..nq);
        let guards = mask_guards(spec);
        let masks = mask_views(&guards, op)?;
        let d32 = shape.head_dim;

        let mut delta = alloc::<f32>(dev, rows)?;
        {
            let kernel = Kernel::load(dev, &MODULE, "attention_bwd_delta_f32")?;
            let rows64 = rows as u64;
            let mut args = kernel.builder();
            args.arg(&o).arg(&d_o).arg(&mut delta).arg(&rows64).arg(&d32);
            let grid = to_u32(rows.div_ceil(BWD_WARPS as usize), op, "grid")?;
            launch(args, config((grid, 1), 32 * BWD_WARPS, 0))?;
        }
        let mut out = alloc::<T>(dev, out_len)?;
        let (mut dq, mut dkv) = out.split_at_mut(nq);
        let (mut dk, mut dv) = dkv.split_at_mut(nk);
        let shared = shape.backward_shared();
        if shape.k_len > 0 {
            let kernel = Kernel::load_for::<T>(dev, &MODULE, "attention_bwd_dkdv")?;
            kernel.allow_shared_memory(shared)?;
            let grid = (shape.k_len.div_ceil(KEYS), shape.batch * shape.kv_heads);
            let mut args = kernel.builder();
            args.arg(&q).arg(&k).arg(&v).arg(&d_o).arg(&lse).arg(&delta);
            arg_or_null(&mut args, &masks.key_padding);
            arg_or_null(&mut args, &masks.segment_ids);
            args.arg(&mut dk).arg(&mut dv).arg(&shape);
            launch(args, config(grid, 32 * BWD_WARPS, shared))?;
        }
        {
            let kernel = Kernel::load_for::<T>(dev, &MODULE, "attention_bwd_dq")?;
            kernel.allow_shared_memory(shared)?;
            let grid = (shape.q_len.div_ceil(BWD_ROWS), shape.batch * shape.q_heads);
            let mut args = kernel.builder();
            args.arg(&q).arg(&k).arg(&v).arg(&d_o).arg(&lse).arg(&delta);
            arg_or_null(&mut args, &masks.key_padding);
            arg_or_null(&mut args, &masks.segment_ids);
            args.arg(&mut dq).arg(&shape);
            launch(args, config(grid, 32 * BWD_WARPS, shared))?;
        }
        Ok((storage(dev, out), Shape::from(out_len)))
    })
}
