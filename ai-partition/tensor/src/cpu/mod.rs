//! CPU kernels. Everything here works on host slices; the executor
//! (`crate::exec`) converts element types and picks the kernel.

pub mod elementwise;
pub mod fill;
pub mod gemm;
pub mod layout;
pub mod norm;
pub mod reduce;
pub mod strided;
