//! The one interface every GPU op of a model step has: a step tells it how
//! many rows it holds and where they start ([`Step`]); the op writes its
//! parameter buffer for that ([`Op::set_step`], parameter writes only,
//! nothing allocated) and then lends its dispatches, in order, to the
//! step's encoder ([`Op::dispatches`]). Each op also says what a step
//! costs it ([`Op::cost`]: its dispatches and the weight bytes it reads), so
//! a model's cost per token is the sum over the ops it records.
//!
//! A model layer is an ordered list of ops (`crate::model::layer`), so a new
//! op joins a layer by implementing this trait, not by being listed by hand
//! in a struct, a constructor, a step setter and a dispatch list.

use super::elementwise::{AddInPlace, GatedMul};
use super::embedding::Embedding;
use super::matmul::Matmul;
use super::quant::{QuantEmbedding, QuantMatmul, QuantizeQ8};
use super::rmsnorm::RmsNorm;
use super::rope::Rope;
use super::ternary::{QuantizeInt8, TernaryMatmul};
use crate::error::Result;
use crate::gpu::{Dispatch, Gpu};

/// What one forward step asks of the ops: `rows` tokens at positions
/// `pos0 .. pos0 + rows`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub rows: u32,
    pub pos0: u32,
}

/// A GPU op of a model step, built once at load and replayed every step.
pub trait Op {
    /// Prepare the next submit for `step` (parameter writes only).
    fn set_step(&mut self, gpu: &Gpu, step: Step) -> Result<()>;

    /// Append this op's dispatches for the prepared step, in execution order.
    fn dispatches<'a>(&'a self, out: &mut Vec<&'a Dispatch>);

    /// What `step` costs this op: the dispatches it records (their number
    /// does not depend on the rows for any op here: a GEMV and a GEMM both
    /// run one dispatch per weight chunk) and the weight bytes it reads.
    /// The default is an op without weights.
    fn cost(&self, _step: Step) -> OpCost {
        OpCost { dispatches: dispatch_count(self), ..OpCost::default() }
    }
}

/// What one step costs an op (or a layer, or a whole step, summed): GPU
/// dispatches and the bytes it must read from memory. Activations are left
/// out: at decode they are kilobytes against the megabytes of weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCost {
    pub dispatches: u32,
    /// Weight bytes read, each byte once, as uploaded (ternary 2 bits per
    /// weight, f16/bf16 2 bytes, GGUF blocks with their scales), from the
    /// GPU buffers' sizes; an embedding gather reads only its rows.
    pub weight_bytes: u64,
    /// K/V cache bytes attention reads.
    pub kv_bytes: u64,
}

impl OpCost {
    /// Everything read.
    pub fn bytes(&self) -> u64 {
        self.weight_bytes + self.kv_bytes
    }
}

impl std::ops::AddAssign for OpCost {
    fn add_assign(&mut self, other: OpCost) {
        self.dispatches += other.dispatches;
        self.weight_bytes += other.weight_bytes;
        self.kv_bytes += other.kv_bytes;
    }
}

impl std::iter::Sum for OpCost {
    fn sum<I: Iterator<Item = OpCost>>(iter: I) -> OpCost {
        let mut total = OpCost::default();
        for cost in iter {
            total += cost;
        }
        total
    }
}

/// How many dispatches `op` records for its prepared step.
fn dispatch_count<O: Op + ?Sized>(op: &O) -> u32 {
    let mut list = Vec::new();
    op.dispatches(&mut list);
    list.len() as u32
}

/// Ops that only need the row count, with one dispatch field or a slice of
/// dispatches (weights split into chunks give one dispatch per chunk); ops
/// with weights name their method `fn(&self, rows) -> u64` giving the
/// weight bytes a step of `rows` reads.
macro_rules! row_op {
    ($ty:ty, field $dispatch:ident $(, reads $reads:ident)?) => {
        impl Op for $ty {
            fn set_step(&mut self, gpu: &Gpu, step: Step) -> Result<()> {
                self.set_rows(gpu, step.rows)
            }
            fn dispatches<'a>(&'a self, out: &mut Vec<&'a Dispatch>) {
                out.push(&self.$dispatch);
            }
            $(fn cost(&self, step: Step) -> OpCost {
                OpCost { dispatches: dispatch_count(self), weight_bytes: self.$reads(step.rows), kv_bytes: 0 }
            })?
        }
    };
    ($ty:ty, method $dispatches:ident $(, reads $reads:ident)?) => {
        impl Op for $ty {
            fn set_step(&mut self, gpu: &Gpu, step: Step) -> Result<()> {
                self.set_rows(gpu, step.rows)
            }
            fn dispatches<'a>(&'a self, out: &mut Vec<&'a Dispatch>) {
                out.extend(self.$dispatches());
            }
            $(fn cost(&self, step: Step) -> OpCost {
                OpCost { dispatches: dispatch_count(self), weight_bytes: self.$reads(step.rows), kv_bytes: 0 }
            })?
        }
    };
}

row_op!(RmsNorm, field dispatch, reads weight_bytes);
row_op!(AddInPlace, field dispatch);
row_op!(GatedMul, field dispatch);
row_op!(QuantizeInt8, field dispatch);
row_op!(QuantizeQ8, field dispatch);
row_op!(TernaryMatmul, method dispatch_list, reads weight_bytes);
row_op!(Matmul, method dispatches, reads weight_bytes);
row_op!(QuantMatmul, method dispatches, reads weight_bytes);
row_op!(Embedding, method dispatches, reads weight_bytes);
row_op!(QuantEmbedding, method dispatches, reads weight_bytes);

impl TernaryMatmul {
    fn dispatch_list(&self) -> [&Dispatch; 1] {
        [self.dispatch()]
    }
}

impl Op for Rope {
    fn set_step(&mut self, gpu: &Gpu, step: Step) -> Result<()> {
        Rope::set_step(self, gpu, step.rows, step.pos0)
    }
    fn dispatches<'a>(&'a self, out: &mut Vec<&'a Dispatch>) {
        out.push(&self.dispatch);
    }
}
