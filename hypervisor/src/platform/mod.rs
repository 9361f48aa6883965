//! The platform layer: everything UEFI- and hardware-facing that is not virtualization.
//!
//! Owned by the platform helper. The virtualization backends (`amd/`, `intel/`) and the
//! partition code use only the interface below; everything else here is internal.
//!
//! # Interface for the backends (kept small; ask before widening)
//!
//! Logging (any CPU, any time, also in host mode after VM exits):
//! * [`hv_println!`](crate::hv_println)`("fmt", args)` → `[hv] text` on COM1; a multi-line
//!   message is prefixed on every line. Whole lines are atomic across CPUs (one fair ticket
//!   lock, [`sync::SpinLock`]).
//! * [`console::LineBuffer`]`::new(partition_name)` and `.push(&log::CONSOLE, byte)`: a guest's
//!   console bytes become `[<partition>] line` lines (control bytes neutralised), within the
//!   partition's byte budget; `.flush` at its stop prints the rest and reports drops.
//! * [`clock::now_ms`]: milliseconds from the TSC, calibrated at boot (any CPU, host mode).
//! * [`log::print_result`]`(pass, format_args!("why"))` prints the final unprefixed
//!   `NEXUS RESULT: PASS` / `NEXUS RESULT: FAIL (why)` line; then [`exit::exit_emulator`]`(pass)`
//!   ends QEMU (isa-debug-exit 0x10/0x11 → status 33/35) or Bochs (port 0x8900), and returns on
//!   real hardware.
//!
//! [`Platform`] (built by [`boot::start`], handed to `launch::launch` as its `LaunchHost`):
//! * `discovery` (CPUID summary, UEFI memory map, ACPI summary or `None`, CPU list),
//!   `policy` (decoded `\NEXUS\POLICY.BIN`), `plan` ([`policy_fit::CpuPlan`]: APIC ID →
//!   partition, plus `unplaced` test CPUs on single-CPU machines), `images`.
//! * `alloc_pages(n) -> Option<u64>`: zeroed, identity-mapped pages from the 32 MiB pool of
//!   `EfiReservedMemoryType` ([`pages`]); any CPU, never calls firmware.
//! * `reserve_at(base, size)`: `AllocatePages(AllocateAddress)` as `EfiReservedMemoryType`;
//!   BSP only, before the BSP returns to firmware; `reserved()` lists what was claimed and
//!   `hypervisor_memory()` the heap and pool, for hiding from the primary partition.
//! * `cpus()`, `run_on_ap(apic_id, extern "efiapi" fn(*mut c_void), arg)`: UEFI MP services
//!   ([`mp`]); non-blocking StartupThisAP, the AP keeps running after the BSP returns.
//! * `host_cr3()`, `host_cpu(apic_id) -> HostCpu`, `bsp_host`: see below.
//! * `image(name)`, `stall_us(us)`.
//!
//! Host environment ([`host_cpu`]), for each CPU that enters host mode:
//! * [`host_cpu::HostCpu`]`::new(apic_id)` allocates its GDT (CS 0x08, SS/DS 0x10, TR 0x18),
//!   TSS with IST stacks for NMI/#DF/#MC, and a 64 KiB stack (`stack_top`).
//! * `unsafe { cpu.load() }` on that CPU with interrupts off: loads the host GDT, segments,
//!   TR, the shared IDT and the host CR3 (1 GiB/2 MiB identity map of all memory); returns
//!   the [`host_cpu::FirmwareContext`] it replaced (GDTR, IDTR, CR0/3/4, EFER, selectors,
//!   TR), which is the guest state of a blue-pilled CPU.
//! * `unsafe { host_cpu::switch_stack(cpu.stack_top, entry, arg) }` continues on the host
//!   stack (`extern "sysv64" fn(*mut c_void) -> !`).
//! * Every vector in host mode is fatal: the IDT stubs (`host_entry.S`) log vector, error
//!   code, RIP, CR2 and registers, print `NEXUS RESULT: FAIL (host exception ...)`, end the
//!   emulator and halt. Never a silent triple fault.
//!
//! Privileged instructions: [`instructions`] (`rdmsr`, `wrmsr`, `read_cr*`/`write_cr*`, `lgdt`,
//! `lidt`, `ltr`, `sgdt`, `sidt`, `str`, `invlpg`, `inb`/`outb`/`outl`, `cli`/`sti`/`hlt`,
//! `reload_segments`), each an `unsafe fn` with a `# Safety` section. Backends keep their own
//! VMX/SVM instructions in their `.S` files.
//!
//! Before any of this, `main.rs` runs [`relocate::run_relocated`]: the image moves from
//! `EfiLoaderCode` (freed by the firmware when the application returns) into
//! `EfiReservedMemoryType` pages, so code and statics stay valid for the APs in host mode. CPUs
//! that run non-primary partitions are removed from the MADT ([`acpi::madt_hide`]).
//!
//! Boot flow and memory ownership: docs/boot.md.

pub mod acpi;
pub mod apic;
#[cfg(target_os = "uefi")]
pub mod boot;
pub mod clock;
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
#[cfg(target_os = "uefi")]
pub mod handover;
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
pub mod nmi;
pub mod pages;
pub mod pe_reloc;
pub mod policy_fit;
pub mod ports;
#[cfg(target_os = "uefi")]
pub mod relocate;
pub mod sync;

#[cfg(target_os = "uefi")]
pub use machine::Platform;
