//! The tensor service: per-tenant handle tables for tensors and GPU
//! allocations, every byte charged to the ledger, work queued on the
//! tenant's streams. The ABI ring handlers (`crate::abi`) and the HTTP API
//! call these functions; they check everything a hostile caller can send.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nexus_abi::ring::{FillKind, OpCode, Placement, VramRegion};
use rayon::prelude::*;

use crate::backend::{self, Backend, Saxpy};
use crate::cpu::fill;
use crate::dtype::{self, DType};
use crate::error::{Result, TensorError};
use crate::exec;
use crate::ledger::{Budgets, ChargeKind, Ledger, LedgerSnapshot, Pool};
use crate::plan::{self, Plan};
use crate::shape::Shape;
use crate::storage::{HostBuf, Memory, Storage};
use crate::streams::Streams;
use crate::tenant::Tenant;

/// Service settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub budgets: Budgets,
    /// CPU threads for kernels.
    pub threads: usize,
    /// Streams that run side by side.
    pub stream_workers: usize,
    /// Most live handles (tensors and allocations) per tenant.
    pub max_handles: usize,
    /// Longest a call waits (gpu_sync, tensor_stream, transfers behind queued work).
    pub max_wait: Duration,
}

impl Config {
    pub fn new(budgets: Budgets) -> Config {
        Config {
            budgets,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            stream_workers: 2,
            max_handles: 65_536,
            max_wait: Duration::from_secs(30),
        }
    }
}

/// A tensor: type, shape, memory, and how much queued work will write it.
pub struct TensorEntry {
    pub dtype: DType,
    pub shape: Shape,
    storage: Arc<Storage>,
    writers: Arc<AtomicU64>,
}

/// A `gpu_alloc` allocation.
pub struct AllocEntry {
    pub region: VramRegion,
    storage: Arc<Storage>,
}

/// A tensor as callers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub handle: u64,
    pub dtype: DType,
    pub shape: Shape,
    pub bytes: u64,
    /// Where it lives now (gaming priority may have moved it to the host).
    pub placement: Placement,
    /// Queued operations that will write it.
    pub pending_writes: u64,
}

#[derive(Default)]
struct Table {
    next: u64,
    tensors: HashMap<u64, Arc<TensorEntry>>,
    allocs: HashMap<u64, Arc<AllocEntry>>,
}

impl Table {
    fn handles(&self) -> usize {
        self.tensors.len() + self.allocs.len()
    }
}

/// How to fill a tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fill {
    pub kind: FillKind,
    pub seed: u64,
    pub a: f64,
    pub b: f64,
}

/// One entry of a `gpu_exec` command buffer (format: docs/ai-tensor.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Fill {
        handle: u64,
        offset: u64,
        len: u64,
        value: u8,
    },
    Copy {
        src: u64,
        src_offset: u64,
        dst: u64,
        dst_offset: u64,
        len: u64,
    },
}

/// Most commands in one `gpu_exec` buffer.
pub const MAX_COMMANDS: usize = 1024;

/// What turning gaming priority on gave back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Buffers moved from the graphics region to host memory.
    pub buffers: u64,
    pub bytes: u64,
}

/// The ledger and backend as `gpu_status` reports them.
#[derive(Clone, Debug)]
pub struct StatusView {
    pub backend: nexus_abi::ring::GpuBackend,
    pub backend_name: String,
    pub device_total: u64,
    pub device_free: u64,
    pub ledger: LedgerSnapshot,
    pub pending_work: u64,
    pub tenants: usize,
}

pub struct TensorService {
    ledger: Arc<Ledger>,
    backend: Arc<dyn Backend>,
    streams: Streams,
    pool: Arc<rayon::ThreadPool>,
    tables: Mutex<HashMap<Tenant, Table>>,
    config: Config,
}

fn pool_of(placement: Placement) -> Pool {
    match placement {
        Placement::Host => Pool::Host,
        Placement::Gpu => Pool::Vram(VramRegion::InferenceCache),
    }
}

/// `offset..offset+len` inside a buffer of `size` bytes, without overflow.
fn span(offset: u64, len: u64, size: u64, what: &str) -> Result<(usize, usize)> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok((offset as usize, end as usize)),
        _ => Err(TensorError::invalid(format!(
            "{what}: bytes {offset}..{offset}+{len} are outside its {size} bytes"
        ))),
    }
}

impl TensorService {
    pub fn new(config: Config) -> Arc<TensorService> {
        Self::with_backend(config, backend::detect())
    }

    pub fn with_backend(config: Config, backend: Arc<dyn Backend>) -> Arc<TensorService> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads.max(1))
            .thread_name(|i| format!("tensor-cpu-{i}"))
            .build()
            .expect("building the tensor thread pool");
        tracing::info!(backend = %backend.describe(), threads = config.threads, "tensor service ready");
        Arc::new(TensorService {
            ledger: Ledger::new(config.budgets.clone()),
            backend,
            streams: Streams::new(config.stream_workers),
            pool: Arc::new(pool),
            tables: Mutex::new(HashMap::new()),
            config,
        })
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn tables(&self) -> MutexGuard<'_, HashMap<Tenant, Table>> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tensor(&self, tenant: Tenant, handle: u64) -> Result<Arc<TensorEntry>> {
        self.tables()
            .get(&tenant)
            .and_then(|t| t.tensors.get(&handle))
            .cloned()
            .ok_or_else(|| TensorError::not_found("tensor", handle))
    }

    /// Any buffer of the tenant (tensor or allocation) for command buffers.
    fn buffer(&self, tenant: Tenant, handle: u64) -> Result<Arc<Storage>> {
        let tables = self.tables();
        let t = tables.get(&tenant);
        t.and_then(|t| t.tensors.get(&handle).map(|e| e.storage.clone()))
            .or_else(|| t.and_then(|t| t.allocs.get(&handle).map(|a| a.storage.clone())))
            .ok_or_else(|| TensorError::not_found("buffer", handle))
    }

    fn insert(&self, tenant: Tenant, f: impl FnOnce(&mut Table, u64)) -> Result<u64> {
        let mut tables = self.tables();
        let t = tables.entry(tenant).or_default();
        if t.handles() >= self.config.max_handles {
            return Err(TensorError::limit(format!(
                "at most {} live handles per partition; free some first",
                self.config.max_handles
            )));
        }
        t.next += 1;
        let h = t.next;
        f(t, h);
        Ok(h)
    }

    fn new_storage(
        &self,
        tenant: Tenant,
        pool: Pool,
        kind: ChargeKind,
        bytes: u64,
    ) -> Result<Storage> {
        let charge = self.ledger.charge(pool, tenant, kind, bytes)?;
        let len = usize::try_from(bytes)
            .map_err(|_| TensorError::limit("size does not fit this machine"))?;
        let mem = match pool {
            Pool::Host => Memory::Host(HostBuf::zeroed(len)?),
            Pool::Vram(_) => self.backend.alloc(len)?,
        };
        Ok(Storage::new(mem, bytes, charge))
    }

    fn info_of(&self, handle: u64, e: &TensorEntry) -> TensorInfo {
        let placement = if e.storage.charge().pool() == Pool::Host {
            Placement::Host
        } else {
            Placement::Gpu
        };
        TensorInfo {
            handle,
            dtype: e.dtype,
            shape: e.shape.clone(),
            bytes: e.storage.len,
            placement,
            pending_writes: e.writers.load(Ordering::Acquire),
        }
    }

    // ---- tensors ----

    /// A zeroed tensor.
    pub fn create(
        &self,
        tenant: Tenant,
        dtype: DType,
        shape: Shape,
        placement: Placement,
    ) -> Result<TensorInfo> {
        let bytes = shape.bytes(dtype)?;
        let storage =
            Arc::new(self.new_storage(tenant, pool_of(placement), ChargeKind::Tensor, bytes)?);
        let entry = Arc::new(TensorEntry {
            dtype,
            shape,
            storage,
            writers: Arc::new(AtomicU64::new(0)),
        });
        let e = entry.clone();
        let handle = self.insert(tenant, |t, h| {
            t.tensors.insert(h, e);
        })?;
        Ok(self.info_of(handle, &entry))
    }

    pub fn info(&self, tenant: Tenant, handle: u64) -> Result<TensorInfo> {
        let e = self.tensor(tenant, handle)?;
        Ok(self.info_of(handle, &e))
    }

    /// The tenant's tensors, by handle.
    pub fn list(&self, tenant: Tenant) -> Vec<TensorInfo> {
        let entries: Vec<(u64, Arc<TensorEntry>)> = self
            .tables()
            .get(&tenant)
            .map(|t| t.tensors.iter().map(|(h, e)| (*h, e.clone())).collect())
            .unwrap_or_default();
        let mut out: Vec<TensorInfo> = entries.iter().map(|(h, e)| self.info_of(*h, e)).collect();
        out.sort_by_key(|i| i.handle);
        out
    }

    /// Free a tensor; queued work on it finishes first (its memory goes back
    /// to the budget when the last piece of work drops it).
    pub fn free(&self, tenant: Tenant, handle: u64) -> Result<u64> {
        let e = self
            .tables()
            .get_mut(&tenant)
            .and_then(|t| t.tensors.remove(&handle))
            .ok_or_else(|| TensorError::not_found("tensor", handle))?;
        Ok(e.storage.len)
    }

    fn wait_idle(&self, e: &TensorEntry, timeout: Duration) -> Result<()> {
        let w = e.writers.clone();
        if self
            .streams
            .wait_until(timeout.min(self.config.max_wait), || {
                w.load(Ordering::Acquire) == 0
            })
        {
            Ok(())
        } else {
            Err(TensorError::busy(
                "queued work still writes this tensor; retry",
            ))
        }
    }

    /// Copy `data` into the tensor at byte `offset`, after the work queued on
    /// it. Returns the tensor bytes after the ones written.
    pub fn write(&self, tenant: Tenant, handle: u64, offset: u64, data: &[u8]) -> Result<u64> {
        let e = self.tensor(tenant, handle)?;
        let (start, end) = span(offset, data.len() as u64, e.storage.len, "tensor")?;
        self.wait_idle(&e, self.config.max_wait)?;
        let mut mem = e.storage.lock();
        self.backend_for(&mem).write(&mut mem, start, data)?;
        Ok(e.storage.len - end as u64)
    }

    /// Up to `max` bytes of the tensor from `offset`, once no queued work
    /// writes it (waiting up to `wait`: `Busy` after). Returns the bytes and
    /// how many follow them.
    pub fn read(
        &self,
        tenant: Tenant,
        handle: u64,
        offset: u64,
        max: u64,
        wait: Duration,
    ) -> Result<(Vec<u8>, u64)> {
        let e = self.tensor(tenant, handle)?;
        if offset > e.storage.len {
            return Err(TensorError::invalid(format!(
                "offset {offset} is past the tensor's {} bytes",
                e.storage.len
            )));
        }
        let len = max.min(e.storage.len - offset);
        self.wait_idle(&e, wait)?;
        let mut out = vec![0u8; len as usize];
        let mem = e.storage.lock();
        self.backend_for(&mem)
            .read(&mem, offset as usize, &mut out)?;
        Ok((out, e.storage.len - offset - len))
    }

    fn backend_for(&self, mem: &Memory) -> &dyn Backend {
        static CPU: backend::cpu::CpuBackend = backend::cpu::CpuBackend;
        if mem.is_host() {
            &CPU
        } else {
            self.backend.as_ref()
        }
    }

    /// Fill a tensor on `stream`; returns the fence.
    pub fn fill(&self, tenant: Tenant, handle: u64, stream: u32, how: Fill) -> Result<u64> {
        let e = self.tensor(tenant, handle)?;
        if !(how.a.is_finite() && how.b.is_finite()) {
            return Err(TensorError::invalid("fill parameters must be finite"));
        }
        match how.kind {
            FillKind::Uniform if how.a >= how.b => {
                return Err(TensorError::invalid("uniform fill needs low < high"))
            }
            FillKind::Normal if how.b < 0.0 => {
                return Err(TensorError::invalid("normal fill needs std >= 0"))
            }
            _ => {}
        }
        let n = e.shape.numel();
        let dt = e.dtype;
        let storage = e.storage.clone();
        let pool = self.pool.clone();
        let backend = self.backend.clone();
        self.submit_writing(tenant, stream, &e, move || {
            let mut bytes = HostBuf::zeroed(n * dt.size())?;
            pool.install(|| fill_values(how, dt, bytes.bytes_mut()));
            let mut mem = storage.lock();
            match &mut *mem {
                Memory::Host(h) => h.bytes_mut().copy_from_slice(bytes.bytes()),
                #[allow(unreachable_patterns)]
                other => backend.write(other, 0, bytes.bytes())?,
            }
            Ok(())
        })
    }

    /// Queue work that writes `e`, counting it as a pending writer until done.
    fn submit_writing(
        &self,
        tenant: Tenant,
        stream: u32,
        e: &TensorEntry,
        work: impl FnOnce() -> Result<()> + Send + 'static,
    ) -> Result<u64> {
        let writers = e.writers.clone();
        writers.fetch_add(1, Ordering::AcqRel);
        let w = writers.clone();
        let r = self.streams.submit(
            tenant,
            stream,
            Box::new(move || {
                let r = work();
                w.fetch_sub(1, Ordering::AcqRel);
                r
            }),
        );
        if r.is_err() {
            writers.fetch_sub(1, Ordering::AcqRel);
        }
        r
    }

    /// Check and queue `op` on `stream`. `output`: an existing tensor of
    /// exactly the right type and shape, or `None` to create one (placed
    /// like the first input; `reshape_to` gives a reshape's target). Returns
    /// the fence and the output handle.
    #[allow(clippy::too_many_arguments)]
    pub fn op(
        &self,
        tenant: Tenant,
        stream: u32,
        op: OpCode,
        inputs: &[u64],
        output: Option<u64>,
        axes: &[u8],
        eps: f32,
        reshape_to: Option<&Shape>,
    ) -> Result<(u64, u64)> {
        let ins: Vec<Arc<TensorEntry>> = inputs
            .iter()
            .map(|&h| self.tensor(tenant, h))
            .collect::<Result<_>>()?;
        let operands: Vec<(DType, Shape)> =
            ins.iter().map(|e| (e.dtype, e.shape.clone())).collect();
        if !(eps.is_finite() && eps > 0.0) {
            return Err(TensorError::invalid(format!(
                "eps must be finite and positive, not {eps}"
            )));
        }
        let (out_handle, out_entry, plan) = match output {
            Some(h) => {
                let out = self.tensor(tenant, h)?;
                let plan = plan::plan(
                    op,
                    &operands,
                    axes,
                    eps,
                    Some((out.dtype, &out.shape)),
                    reshape_to,
                )?;
                (h, out, plan)
            }
            None => {
                let plan = plan::plan(op, &operands, axes, eps, None, reshape_to)?;
                let placement = ins.first().map_or(Placement::Host, |e| {
                    if e.storage.charge().pool() == Pool::Host {
                        Placement::Host
                    } else {
                        Placement::Gpu
                    }
                });
                let info =
                    self.create(tenant, plan.out_dtype, plan.out_shape.clone(), placement)?;
                (info.handle, self.tensor(tenant, info.handle)?, plan)
            }
        };
        let storages: Vec<Arc<Storage>> = ins.iter().map(|e| e.storage.clone()).collect();
        let out = out_entry.storage.clone();
        let (backend, pool, threads) =
            (self.backend.clone(), self.pool.clone(), self.config.threads);
        let fence = self.submit_writing(tenant, stream, &out_entry, move || {
            run_plan(&plan, &storages, &out, backend.as_ref(), &pool, threads)
        })?;
        Ok((fence, out_handle))
    }

    // ---- GPU allocations, command buffers, sync ----

    pub fn gpu_alloc(&self, tenant: Tenant, bytes: u64, region: VramRegion) -> Result<(u64, u64)> {
        if bytes == 0 || !bytes.is_multiple_of(4096) {
            return Err(TensorError::invalid(format!(
                "gpu_alloc of {bytes} bytes: sizes are non-zero multiples of 4096"
            )));
        }
        if bytes > nexus_abi::ring::MAX_GPU_ALLOC {
            return Err(TensorError::limit("gpu_alloc above 16 GiB"));
        }
        let storage =
            Arc::new(self.new_storage(tenant, Pool::Vram(region), ChargeKind::GpuAlloc, bytes)?);
        let entry = Arc::new(AllocEntry { region, storage });
        let h = self.insert(tenant, |t, h| {
            t.allocs.insert(h, entry);
        })?;
        Ok((h, bytes))
    }

    pub fn gpu_free(&self, tenant: Tenant, handle: u64) -> Result<u64> {
        let a = self
            .tables()
            .get_mut(&tenant)
            .and_then(|t| t.allocs.remove(&handle))
            .ok_or_else(|| TensorError::not_found("GPU allocation", handle))?;
        Ok(a.storage.len)
    }

    /// Decode a `gpu_exec` command buffer.
    pub fn parse_commands(buf: &[u8]) -> Result<Vec<Command>> {
        let mut r = nexus_abi::ring::Reader::new(buf);
        let mut out = Vec::new();
        let bad = |what: &str| TensorError::invalid(format!("command buffer: {what}"));
        while r.remaining() > 0 {
            if out.len() >= MAX_COMMANDS {
                return Err(TensorError::limit(format!(
                    "more than {MAX_COMMANDS} commands"
                )));
            }
            let cmd = match r.u8().map_err(|_| bad("truncated"))? {
                1 => Command::Fill {
                    handle: r.u64().map_err(|_| bad("truncated fill"))?,
                    offset: r.u64().map_err(|_| bad("truncated fill"))?,
                    len: r.u64().map_err(|_| bad("truncated fill"))?,
                    value: r.u8().map_err(|_| bad("truncated fill"))?,
                },
                2 => Command::Copy {
                    src: r.u64().map_err(|_| bad("truncated copy"))?,
                    src_offset: r.u64().map_err(|_| bad("truncated copy"))?,
                    dst: r.u64().map_err(|_| bad("truncated copy"))?,
                    dst_offset: r.u64().map_err(|_| bad("truncated copy"))?,
                    len: r.u64().map_err(|_| bad("truncated copy"))?,
                },
                op => return Err(bad(&format!("unknown command {op}"))),
            };
            out.push(cmd);
        }
        if out.is_empty() {
            return Err(bad("empty"));
        }
        Ok(out)
    }

    /// Check and queue a command buffer on `stream`.
    pub fn gpu_exec(&self, tenant: Tenant, stream: u32, commands: &[Command]) -> Result<u64> {
        type Step = (
            Arc<Storage>,
            usize,
            usize,
            Option<(Arc<Storage>, usize)>,
            u8,
        );
        let mut steps: Vec<Step> = Vec::new();
        for c in commands {
            match *c {
                Command::Fill {
                    handle,
                    offset,
                    len,
                    value,
                } => {
                    let s = self.buffer(tenant, handle)?;
                    let (a, b) = span(offset, len, s.len, "fill")?;
                    steps.push((s, a, b, None, value));
                }
                Command::Copy {
                    src,
                    src_offset,
                    dst,
                    dst_offset,
                    len,
                } => {
                    let s = self.buffer(tenant, src)?;
                    let d = self.buffer(tenant, dst)?;
                    let (sa, _) = span(src_offset, len, s.len, "copy source")?;
                    let (da, db) = span(dst_offset, len, d.len, "copy destination")?;
                    steps.push((d, da, db, Some((s, sa)), 0));
                }
            }
        }
        let backend = self.backend.clone();
        self.streams.submit(
            tenant,
            stream,
            Box::new(move || {
                for (dst, a, b, src, value) in steps {
                    let data = match src {
                        None => vec![value; b - a],
                        Some((s, sa)) => {
                            let mut v = vec![0u8; b - a];
                            let m = s.lock();
                            match &*m {
                                Memory::Host(h) => v.copy_from_slice(&h.bytes()[sa..sa + (b - a)]),
                                #[allow(unreachable_patterns)]
                                other => backend.read(other, sa, &mut v)?,
                            }
                            v
                        }
                    };
                    let mut m = dst.lock();
                    match &mut *m {
                        Memory::Host(h) => h.bytes_mut()[a..b].copy_from_slice(&data),
                        #[allow(unreachable_patterns)]
                        other => backend.write(other, a, &data)?,
                    }
                }
                Ok(())
            }),
        )
    }

    /// `cuda_launch` of a built-in kernel (docs/ai-tensor.md): module `nexus`,
    /// functions `scale_f32` and `axpy_f32`. The result does not depend on
    /// the launch geometry (the kernels loop over all elements).
    pub fn launch(
        &self,
        tenant: Tenant,
        module: &str,
        function: &str,
        stream: u32,
        params: &[u8],
    ) -> Result<u64> {
        if module != "nexus" {
            return Err(TensorError::new(
                nexus_abi::Status::NotFound,
                format!("no module \"{module}\" (the built-in module is \"nexus\")"),
            ));
        }
        let mut r = nexus_abi::ring::Reader::new(params);
        let bad =
            || TensorError::invalid(format!("{function}: parameters do not match its signature"));
        let (x, y, n, alpha) = match function {
            "scale_f32" => (
                r.u64().map_err(|_| bad())?,
                None,
                r.u64().map_err(|_| bad())?,
                r.u32().map_err(|_| bad())?,
            ),
            "axpy_f32" => {
                let x = r.u64().map_err(|_| bad())?;
                let y = r.u64().map_err(|_| bad())?;
                (
                    x,
                    Some(y),
                    r.u64().map_err(|_| bad())?,
                    r.u32().map_err(|_| bad())?,
                )
            }
            _ => {
                return Err(TensorError::new(
                    nexus_abi::Status::NotFound,
                    format!("module nexus has no function \"{function}\" (scale_f32, axpy_f32)"),
                ))
            }
        };
        r.finish().map_err(|_| bad())?;
        let alpha = f32::from_bits(alpha);
        let bytes = n
            .checked_mul(4)
            .ok_or_else(|| TensorError::limit("element count overflows"))?;
        let xs = self.buffer(tenant, x)?;
        span(0, bytes, xs.len, "x")?;
        let ys = y.map(|y| self.buffer(tenant, y)).transpose()?;
        if let Some(ys) = &ys {
            span(0, bytes, ys.len, "y")?;
        }
        let backend = self.backend.clone();
        let n = n as usize;
        self.streams.submit(
            tenant,
            stream,
            Box::new(move || {
                // Both buffers stay locked (in id order, as for operations)
                // from the read to the write.
                let other = ys.as_ref().filter(|y| y.id != xs.id);
                let (mut gx, mut gy) = match other {
                    None => (xs.lock(), None),
                    Some(y) if y.id < xs.id => {
                        let gy = y.lock();
                        (xs.lock(), Some(gy))
                    }
                    Some(y) => {
                        let gx = xs.lock();
                        (gx, Some(y.lock()))
                    }
                };
                let on_device = !gx.is_host() && gy.as_ref().is_none_or(|g| !g.is_host());
                if on_device {
                    let op = match (&ys, gy.as_mut()) {
                        (None, _) => Saxpy::Scale { x: &mut gx },
                        (Some(_), None) => Saxpy::AxpySelf { y: &mut gx },
                        (Some(_), Some(gy)) => Saxpy::Axpy { x: &gx, y: gy },
                    };
                    if backend.saxpy(op, alpha, n)? {
                        return Ok(());
                    }
                }
                let floats = |m: &Memory| -> Result<Vec<f32>> {
                    let b = backend::host_bytes(backend.as_ref(), m, n * 4)?;
                    let mut v = vec![0f32; n];
                    dtype::to_f32(DType::F32, &b, &mut v);
                    Ok(v)
                };
                let x = floats(&gx)?;
                let (target, values) = match gy.as_mut() {
                    None if ys.is_none() => (&mut gx, x.iter().map(|v| v * alpha).collect()),
                    None => (&mut gx, x.iter().map(|v| v + alpha * v).collect()),
                    Some(gy) => {
                        let y = floats(gy)?;
                        let v: Vec<f32> = x.iter().zip(&y).map(|(a, b)| b + alpha * a).collect();
                        (gy, v)
                    }
                };
                let mut out = vec![0u8; n * 4];
                dtype::from_f32(DType::F32, &values, &mut out);
                match &mut **target {
                    Memory::Host(h) => h.bytes_mut()[..n * 4].copy_from_slice(&out),
                    #[allow(unreachable_patterns)]
                    other => backend.write(other, 0, &out)?,
                }
                Ok(())
            }),
        )
    }

    pub fn sync(&self, tenant: Tenant, fence: u64, timeout: Duration) -> Result<u64> {
        self.streams
            .sync(tenant, fence, timeout.min(self.config.max_wait))
    }

    // ---- ledger ----

    pub fn status(&self) -> StatusView {
        let (total, free) = self.backend.memory_info();
        StatusView {
            backend: self.backend.kind(),
            backend_name: self.backend.describe(),
            device_total: total,
            device_free: free,
            ledger: self.ledger.snapshot(),
            pending_work: self.streams.pending(),
            tenants: self.tables().len(),
        }
    }

    /// Gaming priority on or off. Turning it on refuses new borrowing of the
    /// graphics region at once and moves what other tenants hold there to
    /// host memory (their handles stay valid; work on them runs on the CPU).
    pub fn set_gaming(&self, on: bool) -> Result<Reclaimed> {
        self.ledger.set_gaming(on);
        let mut done = Reclaimed::default();
        if !on {
            return Ok(done);
        }
        let owner = self.ledger.budgets().graphics_owner;
        let storages: Vec<Arc<Storage>> = self
            .tables()
            .iter()
            .filter(|(t, _)| Some(**t) != owner)
            .flat_map(|(_, t)| {
                t.allocs
                    .values()
                    .map(|a| a.storage.clone())
                    .chain(t.tensors.values().map(|e| e.storage.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for s in storages {
            let mut charge = s.charge();
            if charge.pool() != Pool::Vram(VramRegion::Graphics) {
                continue;
            }
            let mut mem = s.lock();
            if !mem.is_host() {
                let bytes =
                    backend::host_bytes(self.backend.as_ref(), &mem, s.len as usize)?.into_owned();
                let mut h = HostBuf::zeroed(s.len as usize)?;
                h.bytes_mut().copy_from_slice(&bytes);
                *mem = Memory::Host(h);
            }
            // Reclaiming may not fail: the host charge is booked even past its budget.
            let host = self.ledger.charge_unchecked(
                Pool::Host,
                charge.tenant(),
                ChargeKind::GpuAlloc,
                s.len,
            );
            let old = std::mem::replace(&mut *charge, host);
            drop(mem);
            drop(charge);
            drop(old);
            done.buffers += 1;
            done.bytes += s.len;
        }
        if done.buffers > 0 {
            tracing::info!(
                buffers = done.buffers,
                bytes = done.bytes,
                "gaming priority: moved borrowed graphics memory to the host"
            );
        }
        Ok(done)
    }

    /// Free everything `tenant` holds (its partition stopped).
    pub fn release_tenant(&self, tenant: Tenant) -> u64 {
        let t = self.tables().remove(&tenant);
        self.streams.drop_tenant(tenant);
        t.map_or(0, |t| (t.tensors.len() + t.allocs.len()) as u64)
    }
}

/// Fill `out` (elements of `dt`) as `how` says, element `i` from counter `i`.
fn fill_values(how: Fill, dt: DType, out: &mut [u8]) {
    const CHUNK: usize = 1 << 14;
    let size = dt.size();
    out.par_chunks_mut(CHUNK * size)
        .enumerate()
        .for_each(|(c, bytes)| {
            let first = (c * CHUNK) as u64;
            let vals: Vec<f32> = (0..bytes.len() / size)
                .map(|j| {
                    let i = first + j as u64;
                    (match how.kind {
                        FillKind::Zeros => 0.0,
                        FillKind::Constant => how.a,
                        FillKind::Uniform => fill::uniform(how.seed, i, how.a, how.b),
                        FillKind::Normal => fill::normal(how.seed, i, how.a, how.b),
                    }) as f32
                })
                .collect();
            dtype::from_f32(dt, &vals, bytes);
        });
}

/// Run a checked plan: lock every storage once, in id order; compute on the
/// device when everything is there and the backend has the kernel, on the
/// host otherwise.
fn run_plan(
    plan: &Plan,
    inputs: &[Arc<Storage>],
    out: &Arc<Storage>,
    backend: &dyn Backend,
    pool: &rayon::ThreadPool,
    threads: usize,
) -> Result<()> {
    let mut order: Vec<&Arc<Storage>> = inputs.iter().chain([out]).collect();
    order.sort_by_key(|s| s.id);
    order.dedup_by_key(|s| s.id);
    let mut guards: Vec<(u64, MutexGuard<'_, Memory>)> =
        order.iter().map(|s| (s.id, s.lock())).collect();
    let out_pos = guards
        .iter()
        .position(|(id, _)| *id == out.id)
        .expect("output locked");
    let (_, mut out_mem) = guards.remove(out_pos);
    let aliased = inputs.iter().any(|s| s.id == out.id);
    let out_len = plan.out_shape.numel() * plan.out_dtype.size();
    // Device path: every operand on the device, no aliasing.
    let all_device = !out_mem.is_host()
        && inputs
            .iter()
            .all(|s| guards.iter().any(|(id, g)| *id == s.id && !g.is_host()));
    if all_device && !aliased {
        let ins: Vec<&Memory> = inputs
            .iter()
            .map(|s| {
                &*guards
                    .iter()
                    .find(|(id, _)| *id == s.id)
                    .expect("input locked")
                    .1
            })
            .collect();
        if backend.run(plan, &ins, &mut out_mem)? {
            return Ok(());
        }
    }
    // Host path.
    let result: Option<HostBuf> = {
        let views: Vec<std::borrow::Cow<'_, [u8]>> = inputs
            .iter()
            .zip(&plan.inputs)
            .map(|(s, (dt, shape))| {
                let len = shape.numel() * dt.size();
                let m: &Memory = if s.id == out.id {
                    &out_mem
                } else {
                    &guards
                        .iter()
                        .find(|(id, _)| *id == s.id)
                        .expect("input locked")
                        .1
                };
                backend::host_bytes(backend, m, len)
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&[u8]> = views.iter().map(|v| v.as_ref()).collect();
        if aliased || !out_mem.is_host() {
            let mut tmp = HostBuf::zeroed(out_len)?;
            pool.install(|| exec::run(plan, &refs, tmp.bytes_mut(), threads))?;
            Some(tmp)
        } else {
            None
        }
    };
    match result {
        Some(tmp) => match &mut *out_mem {
            Memory::Host(h) => h.bytes_mut()[..out_len].copy_from_slice(tmp.bytes()),
            #[allow(unreachable_patterns)]
            other => backend.write(other, 0, tmp.bytes())?,
        },
        None => {
            let views: Vec<std::borrow::Cow<'_, [u8]>> = inputs
                .iter()
                .zip(&plan.inputs)
                .map(|(s, (dt, shape))| {
                    let g = &guards
                        .iter()
                        .find(|(id, _)| *id == s.id)
                        .expect("input locked")
                        .1;
                    backend::host_bytes(backend, g, shape.numel() * dt.size())
                })
                .collect::<Result<_>>()?;
            let refs: Vec<&[u8]> = views.iter().map(|v| v.as_ref()).collect();
            match &mut *out_mem {
                Memory::Host(h) => {
                    pool.install(|| exec::run(plan, &refs, &mut h.bytes_mut()[..out_len], threads))?
                }
                #[allow(unreachable_patterns)]
                _ => return Err(TensorError::internal("output is not host memory")),
            }
        }
    }
    Ok(())
}
