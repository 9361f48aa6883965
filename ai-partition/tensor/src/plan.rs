//! Checking an operation against its operands before any work is queued:
//! element types, shapes, axes, and the output's shape and type (given, or
//! inferred for callers that let the service create the output).

use nexus_abi::ring::OpCode;

use crate::cpu::elementwise::{Activation, Binary};
use crate::dtype::DType;
use crate::error::{Result, TensorError};
use crate::shape::{broadcast, broadcast_strides, Shape};

/// What a checked operation does, with everything the kernels need.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Binary(Binary),
    MatMul(MatMulPlan),
    Activation(Activation),
    Softmax,
    LayerNorm {
        eps: f32,
        gamma: bool,
        beta: bool,
    },
    RmsNorm {
        eps: f32,
        weight: bool,
    },
    /// Same element count; converts the type when the output's differs.
    Copy,
    Transpose {
        perm: Vec<usize>,
    },
    Reduce {
        mean: bool,
        reduce: Vec<bool>,
    },
}

/// A batched matrix product: `batch` broadcast over both operands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatMulPlan {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub batch: Vec<usize>,
    /// Strides (in whole matrices) of each operand over `batch`; 0 where it broadcasts.
    pub a_batch: Vec<usize>,
    pub b_batch: Vec<usize>,
}

/// A checked operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub op: OpCode,
    pub kind: Kind,
    pub inputs: Vec<(DType, Shape)>,
    pub out_dtype: DType,
    pub out_shape: Shape,
}

impl Plan {
    /// Numpy-style broadcast strides of input `i` against the output (binary ops).
    pub fn operand_strides(&self, i: usize) -> Vec<usize> {
        broadcast_strides(self.inputs[i].1.dims(), self.out_shape.dims())
    }
}

fn name(op: OpCode) -> &'static str {
    match op {
        OpCode::Add => "add",
        OpCode::Sub => "sub",
        OpCode::Mul => "mul",
        OpCode::Div => "div",
        OpCode::MatMul => "matmul",
        OpCode::Relu => "relu",
        OpCode::Softmax => "softmax",
        OpCode::Copy => "copy",
        OpCode::LayerNorm => "layernorm",
        OpCode::RmsNorm => "rmsnorm",
        OpCode::Gelu => "gelu",
        OpCode::Silu => "silu",
        OpCode::Transpose => "transpose",
        OpCode::Reshape => "reshape",
        OpCode::Sum => "sum",
        OpCode::Mean => "mean",
    }
}

/// The operation's name as the HTTP API spells it.
pub fn op_name(op: OpCode) -> &'static str {
    name(op)
}

/// Inverse of [`op_name`].
pub fn op_from_name(s: &str) -> Result<OpCode> {
    OpCode::ALL
        .iter()
        .copied()
        .find(|&op| name(op) == s)
        .ok_or_else(|| {
            let all: Vec<&str> = OpCode::ALL.iter().map(|&o| name(o)).collect();
            TensorError::invalid(format!("unknown op \"{s}\" (one of: {})", all.join(", ")))
        })
}

/// Check `op` over `inputs` with `axes` and `eps`; `output` is the output
/// tensor's type and shape when it exists already (it must then be exactly
/// what the operation produces), `None` to infer it (a reshape then needs
/// `reshape_to`).
pub fn plan(
    op: OpCode,
    inputs: &[(DType, Shape)],
    axes: &[u8],
    eps: f32,
    output: Option<(DType, &Shape)>,
    reshape_to: Option<&Shape>,
) -> Result<Plan> {
    let nm = name(op);
    let (min, max) = op.inputs();
    if inputs.len() < min || inputs.len() > max {
        return Err(TensorError::invalid(format!(
            "{nm} takes {min}..={max} inputs, got {}",
            inputs.len()
        )));
    }
    if !op.takes_axes() && !axes.is_empty() {
        return Err(TensorError::invalid(format!("{nm} takes no axes")));
    }
    let (dt, x) = (inputs[0].0, &inputs[0].1);
    let same_type = |what: &str| -> Result<()> {
        for (i, (d, _)) in inputs.iter().enumerate().skip(1) {
            if *d != dt {
                return Err(TensorError::dtype(format!(
                    "{nm}: {what} {i} is {d} but input 0 is {dt}"
                )));
            }
        }
        Ok(())
    };
    let float_only = || -> Result<()> {
        if dt.is_float() {
            Ok(())
        } else {
            Err(TensorError::dtype(format!(
                "{nm} needs a floating-point tensor (f32, f16, bf16), not {dt}"
            )))
        }
    };
    let last_axis = || -> Result<usize> {
        x.dims().last().copied().ok_or_else(|| {
            TensorError::shape(format!(
                "{nm} works over the last axis; a rank-0 tensor has none"
            ))
        })
    };
    let (kind, out_shape, out_dtype) = match op {
        OpCode::Add | OpCode::Sub | OpCode::Mul | OpCode::Div => {
            same_type("input")?;
            if op == OpCode::Div && !dt.is_float() {
                return Err(TensorError::dtype(
                    "div needs a floating-point type, not i32",
                ));
            }
            let dims = broadcast(x.dims(), inputs[1].1.dims())?;
            let b = match op {
                OpCode::Add => Binary::Add,
                OpCode::Sub => Binary::Sub,
                OpCode::Mul => Binary::Mul,
                _ => Binary::Div,
            };
            (Kind::Binary(b), Shape::from_usize(&dims)?, dt)
        }
        OpCode::MatMul => {
            same_type("input")?;
            let (a, b) = (x.dims(), inputs[1].1.dims());
            if a.len() < 2 || b.len() < 2 {
                return Err(TensorError::shape(format!(
                    "matmul needs at least 2 axes on each input, got {a:?} and {b:?}"
                )));
            }
            let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
            let (k2, n) = (b[b.len() - 2], b[b.len() - 1]);
            if k != k2 {
                return Err(TensorError::shape(format!(
                    "matmul: inner dimensions differ: {a:?} x {b:?} ({k} vs {k2})"
                )));
            }
            let (ba, bb) = (&a[..a.len() - 2], &b[..b.len() - 2]);
            let batch = broadcast(ba, bb)?;
            let mut dims = batch.clone();
            dims.extend([m, n]);
            let plan = MatMulPlan {
                m,
                k,
                n,
                a_batch: broadcast_strides(ba, &batch),
                b_batch: broadcast_strides(bb, &batch),
                batch,
            };
            (Kind::MatMul(plan), Shape::from_usize(&dims)?, dt)
        }
        OpCode::Relu => (Kind::Activation(Activation::Relu), x.clone(), dt),
        OpCode::Gelu | OpCode::Silu => {
            float_only()?;
            let act = if op == OpCode::Gelu {
                Activation::Gelu
            } else {
                Activation::Silu
            };
            (Kind::Activation(act), x.clone(), dt)
        }
        OpCode::Softmax => {
            float_only()?;
            last_axis()?;
            (Kind::Softmax, x.clone(), dt)
        }
        OpCode::LayerNorm | OpCode::RmsNorm => {
            float_only()?;
            same_type("parameter")?;
            let len = last_axis()?;
            for (i, (_, s)) in inputs.iter().enumerate().skip(1) {
                if s.dims() != [len] {
                    return Err(TensorError::shape(format!(
                        "{nm}: parameter {i} must have shape [{len}] (the last axis of {x}), got {s}"
                    )));
                }
            }
            let kind = if op == OpCode::LayerNorm {
                Kind::LayerNorm {
                    eps,
                    gamma: inputs.len() > 1,
                    beta: inputs.len() > 2,
                }
            } else {
                Kind::RmsNorm {
                    eps,
                    weight: inputs.len() > 1,
                }
            };
            (kind, x.clone(), dt)
        }
        OpCode::Copy => {
            // The output decides shape (same count) and type.
            let (odt, oshape) = match output {
                Some((d, s)) => (d, s.clone()),
                None => (dt, x.clone()),
            };
            if oshape.numel() != x.numel() {
                return Err(TensorError::shape(format!(
                    "copy: output {oshape} holds {} elements, input {x} holds {}",
                    oshape.numel(),
                    x.numel()
                )));
            }
            (Kind::Copy, oshape, odt)
        }
        OpCode::Reshape => {
            let target = match (output, reshape_to) {
                (Some((_, s)), _) => s.clone(),
                (None, Some(s)) => s.clone(),
                (None, None) => {
                    return Err(TensorError::invalid("reshape needs the target shape"));
                }
            };
            if target.numel() != x.numel() {
                return Err(TensorError::shape(format!(
                    "reshape: {x} ({} elements) cannot become {target} ({} elements)",
                    x.numel(),
                    target.numel()
                )));
            }
            (Kind::Copy, target, dt)
        }
        OpCode::Transpose => {
            let rank = x.rank();
            let perm: Vec<usize> = if axes.is_empty() {
                if rank < 2 {
                    return Err(TensorError::shape(format!(
                        "transpose without axes swaps the last two; {x} has fewer"
                    )));
                }
                let mut p: Vec<usize> = (0..rank).collect();
                p.swap(rank - 2, rank - 1);
                p
            } else {
                if axes.len() != rank || axes.iter().any(|&a| a as usize >= rank) {
                    return Err(TensorError::shape(format!(
                        "transpose: axes {axes:?} are not a permutation of the {rank} axes of {x}"
                    )));
                }
                axes.iter().map(|&a| a as usize).collect()
            };
            let dims: Vec<usize> = perm.iter().map(|&p| x.dims()[p]).collect();
            (Kind::Transpose { perm }, Shape::from_usize(&dims)?, dt)
        }
        OpCode::Sum | OpCode::Mean => {
            if op == OpCode::Mean {
                float_only()?;
            }
            let rank = x.rank();
            if let Some(&a) = axes.iter().find(|&&a| a as usize >= rank) {
                return Err(TensorError::shape(format!(
                    "{nm}: axis {a} is beyond the rank of {x}"
                )));
            }
            let reduce: Vec<bool> = (0..rank)
                .map(|i| axes.is_empty() || axes.contains(&(i as u8)))
                .collect();
            let dropped: Vec<usize> = x
                .dims()
                .iter()
                .zip(&reduce)
                .filter(|(_, &r)| !r)
                .map(|(&d, _)| d)
                .collect();
            let kept: Vec<usize> = x
                .dims()
                .iter()
                .zip(&reduce)
                .map(|(&d, &r)| if r { 1 } else { d })
                .collect();
            // An existing output may keep the reduced axes as 1 (keepdims).
            let shape = match output {
                Some((_, s)) if s.dims() == kept.as_slice() => s.clone(),
                _ => Shape::from_usize(&dropped)?,
            };
            (
                Kind::Reduce {
                    mean: op == OpCode::Mean,
                    reduce,
                },
                shape,
                dt,
            )
        }
    };
    if let Some((odt, oshape)) = output {
        if odt != out_dtype {
            return Err(TensorError::dtype(format!(
                "{nm} produces {out_dtype} but the output tensor is {odt}"
            )));
        }
        if *oshape != out_shape {
            return Err(TensorError::shape(format!(
                "{nm} produces shape {out_shape} but the output tensor is {oshape}"
            )));
        }
    }
    Ok(Plan {
        op,
        kind,
        inputs: inputs.to_vec(),
        out_dtype,
        out_shape,
    })
}
