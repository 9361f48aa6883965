//! The platform layer: everything UEFI- and hardware-facing that is not virtualization.
//!
//! Owned by the platform helper. The virtualization backends (`amd/`, `intel/`) and the
//! partition code use only the interface below; everything else here is internal.
//!
//! # Interface for the backends (kept small; ask before widening)
//!
//! Logging (any CPU, any time, also from host mode after VM exits):
//! * [`hv_println!`](crate::hv_println)`("fmt", args)` → `[hv] text` on COM1; a multi-line
//!   message is prefixed on every line. Whole lines are atomic across CPUs (one spinlock).
//! * [`console::LineBuffer`]`::new(partition_name)` and `.push(&log::CONSOLE, byte)`: a guest's
//!   console bytes (e.g. from a trapped COM1 `out`) become `[<partition>] line` lines.
//! * [`log::print_result`]`(pass, format_args!("why"))` prints the final unprefixed
//!   `NEXUS RESULT: PASS` / `NEXUS RESULT: FAIL (why)` line; then [`exit::exit_emulator`]`(pass)`
//!   ends QEMU (isa-debug-exit 0x10/0x11 → status 33/35) or Bochs (port 0x8900), and returns on
//!   real hardware.
//!
//! Machine facts (filled once on the BSP before the backend is called):
//! * [`cpu_info::CpuSummary`]: vendor, SVM/NPT/ASIDs/NRIP-save, VMX/EPT, hybrid core type.
//! * [`memory_map::MapEntry`] list and [`memory_map::MemoryMapSummary`] (RAM top etc.).
//!
//! Privileged instructions: [`instructions`] (`rdmsr`, `wrmsr`, `read_cr*`/`write_cr*`, `lgdt`,
//! `lidt`, `ltr`, `sgdt`, `sidt`, `invlpg`, `inb`/`outb`/`outl`, `cli`/`sti`/`hlt`), each an
//! `unsafe fn` with a `# Safety` section. Backends keep their own VMX/SVM instructions in their
//! `.S` files.
//!
//! Coming next (same module, names fixed now so the backends can code against them):
//! * `platform::Platform` (created by `main.rs`, handed to the backend entry by `&mut`):
//!   - `alloc_pages(n) -> Option<u64>`: zeroed, 4 KiB-aligned, identity-mapped host-physical
//!     pages from a pool allocated at start as `EfiRuntimeServicesData` (a later OS never
//!     reclaims it). Usable from any CPU (spinlock), never calls firmware, so APs may use it.
//!   - `reserve_at(base, size) -> Result<(), ReserveError>`: claims exactly that host-physical
//!     range (`AllocatePages(AllocateAddress)`, reserved type) for a test partition; BSP only,
//!     before the BSP returns to firmware.
//!   - `alloc_code_pages(n) -> Option<u64>`: like `alloc_pages` but `LoaderCode`-typed, for
//!     guest code that OVMF would otherwise map no-execute.
//!   - `cpus() -> &[CpuInfo]`: per processor index: APIC ID, is_bsp, enabled, core type.
//!   - `run_on_ap(index, extern "efiapi" fn(*mut c_void), arg) -> Result<(), MpError>`: UEFI MP
//!     services `StartupThisAP` in non-blocking mode; the AP keeps running `f` (and the
//!     partition it enters) after the BSP has returned to firmware. BSP only.
//!   - `host_cr3() -> u64`: root of the hypervisor's own identity map (all RAM and MMIO below
//!     the map top, 2 MiB/1 GiB pages), for host-mode CR3 (VMCB host save / VMCS HOST_CR3).
//!   - `host_cpu(index) -> HostCpu`: per-CPU host GDT (with TSS), IDT and stack top; the backend
//!     loads them with `HostCpu::load()` on that CPU before its first VMRUN/VMLAUNCH. IDT
//!     handlers log vector, error code and RIP via the fatal console path and halt the CPU
//!     (never a silent triple fault).
//!   - `policy() -> &CompiledPolicy`, `image(name) -> Option<&[u8]>` (guest ELF bytes loaded
//!     from `\NEXUS\<IMAGE>.ELF` on the ESP).
//! * Boot flow (main.rs): UART → banner → discovery → policy load + fit check → images →
//!   host environment → backend entry (`nexus_hypervisor::launch`-like, provided by the SVM
//!   side) → BSP returns to firmware in guest mode.

pub mod acpi;
#[cfg(target_os = "uefi")]
pub mod boot;
pub mod console;
pub mod cpu_info;
pub mod descriptors;
#[cfg(target_os = "uefi")]
pub mod esp;
pub mod esp_path;
pub mod exceptions;
pub mod exit;
#[cfg(target_os = "uefi")]
pub mod firmware;
pub mod heap;
pub mod host_cpu;
pub mod host_paging;
pub mod instructions;
#[cfg(target_os = "uefi")]
mod launch_host;
pub mod log;
#[cfg(target_os = "uefi")]
pub mod machine;
pub mod memory_map;
#[cfg(target_os = "uefi")]
pub mod mp;
pub mod pages;
pub mod policy_fit;
pub mod ports;
pub mod sync;

#[cfg(target_os = "uefi")]
pub use machine::Platform;
