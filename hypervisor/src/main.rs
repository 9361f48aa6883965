//! UEFI entry point of the NexusOS hypervisor.
//!
//! Keeps only the boot sequence; each step lives in `nexus_hypervisor::platform` (see
//! docs/boot.md). On the host this file builds to an empty program so the workspace compiles
//! everywhere.
#![cfg_attr(target_os = "uefi", no_std, no_main)]

#[cfg(target_os = "uefi")]
mod uefi_main {
    use nexus_hypervisor::hv_println;
    use nexus_hypervisor::platform::relocate::{self, RelocError, Relocation};
    use nexus_hypervisor::platform::{boot, exit, heap, log};
    use uefi::{entry, Status};

    #[entry]
    fn efi_main() -> Status {
        // First move out of loader memory, which the firmware frees when we return.
        relocate::run_relocated(boot_main)
    }

    /// Everything else, running in the relocated image (reserved pages).
    fn boot_main(relocation: Result<Relocation, RelocError>) -> Status {
        if log::init_serial().is_err() {
            // No console: nothing can be reported; give control back to the firmware.
            return Status::DEVICE_ERROR;
        }
        hv_println!("NexusOS hypervisor {}", env!("CARGO_PKG_VERSION"));
        match relocation {
            Ok(r) => hv_println!(
                "image: moved {:#x} -> {:#x} ({} KiB, {} relocations), runs from reserved memory",
                r.from,
                r.to,
                r.bytes >> 10,
                r.patched
            ),
            Err(e) => return fail(format_args!("{e}")),
        }
        if let Err(e) = heap::init() {
            return fail(format_args!(
                "cannot allocate the hypervisor heap ({:?})",
                e.status()
            ));
        }
        match run() {
            Ok(verdict) => {
                log::print_result(verdict.pass, format_args!("{}", verdict.why));
                exit::exit_emulator(verdict.pass);
                Status::SUCCESS
            }
            Err(e) => fail(format_args!("{e}")),
        }
    }

    /// Boot steps (page pool, discovery, MP services, policy and its fit, guest images, host
    /// environment), then the backend: it starts the partitions, waits for the test
    /// partitions and judges the run.
    fn run() -> Result<nexus_hypervisor::launch::Verdict, boot::BootError> {
        let mut platform = boot::start()?;
        let policy = platform.policy;
        Ok(nexus_hypervisor::launch::launch(&mut platform, &policy))
    }

    /// Report a fatal boot error and end the run (or return to firmware on real hardware).
    fn fail(why: core::fmt::Arguments<'_>) -> Status {
        hv_println!("error: {why}");
        log::print_result(false, why);
        exit::exit_emulator(false);
        Status::ABORTED
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        if !log::CONSOLE.is_ready() {
            // A panic before the console was set up: try to get one, to say why.
            let _ = log::init_serial();
        }
        log::CONSOLE.println_fatal("hv", format_args!("panic: {info}"));
        log::print_result(false, format_args!("hypervisor panic"));
        exit::exit_emulator(false);
        // SAFETY: nothing sensible can continue after a hypervisor panic on this CPU.
        unsafe { nexus_hypervisor::platform::instructions::halt_forever() }
    }
}

#[cfg(not(target_os = "uefi"))]
fn main() {}
