//! Tensor and allocation memory: host buffers (also the device memory of the
//! CPU backend) or device buffers, each holding its ledger charge.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::error::{Result, TensorError};
use crate::ledger::Charge;

/// Host memory, 8-byte aligned so f32 and i32 views need no copy.
pub struct HostBuf {
    words: Vec<u64>,
    len: usize,
}

impl HostBuf {
    /// `len` zero bytes; `NoMemory` when the allocator refuses (no abort).
    pub fn zeroed(len: usize) -> Result<HostBuf> {
        let n = len.div_ceil(8);
        let mut words = Vec::new();
        words.try_reserve_exact(n).map_err(|_| {
            TensorError::no_memory(format!("cannot allocate {len} bytes of host memory"))
        })?;
        words.resize(n, 0);
        Ok(HostBuf { words, len })
    }

    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }
}

/// Where the bytes are.
pub enum Memory {
    Host(HostBuf),
    /// Device memory of the CUDA backend.
    #[cfg(feature = "cuda")]
    Cuda(crate::backend::cuda::DeviceBuf),
}

impl Memory {
    pub fn is_host(&self) -> bool {
        matches!(self, Memory::Host(_))
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The memory of one tensor or allocation. Operations lock storages in `id`
/// order, so two streams working on the same tensors cannot deadlock.
pub struct Storage {
    pub id: u64,
    pub len: u64,
    mem: Mutex<Memory>,
    charge: Mutex<Charge>,
}

impl Storage {
    pub fn new(mem: Memory, len: u64, charge: Charge) -> Storage {
        Storage {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            len,
            mem: Mutex::new(mem),
            charge: Mutex::new(charge),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Memory> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn charge(&self) -> MutexGuard<'_, Charge> {
        self.charge.lock().unwrap_or_else(|e| e.into_inner())
    }
}
