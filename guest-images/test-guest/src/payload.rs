//! The tiny 64-bit programs the `manage` test loads into a managed partition, and the page
//! tables and GDT they start on, laid out as a VMM lays out a Linux boot (tables, GDT, code
//! at fixed offsets from the partition's base). Pure: assembled here, tested on the host.

use nexus_abi::cpuid::Transport;
use nexus_abi::manage::StartState;

/// Offsets from the managed partition's base.
pub const GDT_OFFSET: u64 = 0x500;
pub const TABLES_OFFSET: u64 = 0x1000;
pub const CODE_OFFSET: u64 = 0x1_0000;
pub const STACK_OFFSET: u64 = 0x2_0000;
/// The message sits this far into the code page.
const MESSAGE_AT: usize = 0x80;
/// Bytes of a program (code and message).
pub const CODE_SIZE: usize = 0x100;
/// What `Hello` prints.
pub const HELLO: &str = "hello from a managed partition";

/// Which program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// Print [`HELLO`], then `partition_exit(RSI)`: the exit code proves the start state's
    /// RSI arrived.
    Hello,
    /// `yield` forever: only a manager's stop ends it.
    Spin,
    /// Write the byte below the partition's memory: the hypervisor stops it.
    Fault,
}

/// The hypercall instruction's bytes.
fn call_bytes(t: Transport) -> [u8; 3] {
    match t {
        Transport::Vmcall => [0x0f, 0x01, 0xc1],
        _ => [0x0f, 0x01, 0xd9],
    }
}

/// The program's bytes for a partition at `base`.
pub fn code(program: Program, base: u64, transport: Transport) -> [u8; CODE_SIZE] {
    let call = call_bytes(transport);
    let mut b = [0u8; CODE_SIZE];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        b[n..n + bytes.len()].copy_from_slice(bytes);
        n += bytes.len();
    };
    match program {
        Program::Hello => {
            let msg = base + CODE_OFFSET + MESSAGE_AT as u64;
            put(&[0x49, 0x89, 0xf4]); // mov r12, rsi
            put(&[0x48, 0xbf]); // mov rdi, imm64: the message
            put(&msg.to_le_bytes());
            put(&[0x48, 0xbe]); // mov rsi, imm64: its length
            put(&(HELLO.len() as u64).to_le_bytes());
            put(&[0xb8, 0x02, 0, 0, 0]); // mov eax, 2 (console_write)
            put(&call);
            put(&[0x4c, 0x89, 0xe7]); // mov rdi, r12
            put(&[0x31, 0xf6, 0x31, 0xd2]); // xor esi, esi; xor edx, edx
            put(&[0xb8, 0x05, 0, 0, 0]); // mov eax, 5 (partition_exit)
            put(&call);
        }
        Program::Spin => {
            put(&[0xb8, 0x04, 0, 0, 0]); // mov eax, 4 (yield)
            put(&call);
            put(&[0xeb, 0xf6]); // jmp back to the mov
        }
        Program::Fault => {
            put(&[0x48, 0xbf]); // mov rdi, imm64: below the partition
            put(&(base - 0x1000).to_le_bytes());
            put(&[0xc6, 0x07, 0x01]); // mov byte [rdi], 1
        }
    }
    put(&[0xf4, 0xeb, 0xfd]); // hlt; jmp back to the hlt
    if program == Program::Hello {
        b[MESSAGE_AT..MESSAGE_AT + HELLO.len()].copy_from_slice(HELLO.as_bytes());
    }
    b
}

/// PML4, PDPT and one page directory identity-mapping, with 2 MiB pages, the 1 GiB that
/// holds `base` (the partition's memory; the rest of that GiB is the nested table's to
/// refuse).
pub fn tables(base: u64) -> [u64; 3 * 512] {
    let t = base + TABLES_OFFSET;
    let (pdpt, pd) = (t + 0x1000, t + 0x2000);
    let mut e = [0u64; 3 * 512];
    e[((base >> 39) & 511) as usize] = pdpt | 0b11;
    e[512 + ((base >> 30) & 511) as usize] = pd | 0b11;
    let gib = base & !((1 << 30) - 1);
    for (i, d) in e[1024..].iter_mut().enumerate() {
        *d = (gib + ((i as u64) << 21)) | 0x83; // present, writable, 2 MiB
    }
    e
}

/// Null, null, 64-bit code (selector 0x10), data (0x18): Linux's boot GDT.
pub const GDT: [u64; 4] = [0, 0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff];

/// How the program at `base` starts, with `rsi` as its RSI.
pub fn start_state(base: u64, rsi: u64) -> StartState {
    StartState {
        rip: base + CODE_OFFSET,
        rsp: base + STACK_OFFSET,
        rsi,
        cr3: base + TABLES_OFFSET,
        gdt_base: base + GDT_OFFSET,
        gdt_limit: (GDT.len() * 8 - 1) as u16,
        code_selector: 0x10,
        data_selector: 0x18,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x4400_0000;

    #[test]
    fn the_tables_map_the_partition_and_its_gib_identically() {
        let e = tables(BASE);
        let walk = |va: u64| -> Option<u64> {
            let pml4 = e[((va >> 39) & 511) as usize];
            if pml4 & 1 == 0 || pml4 & !0xfff != BASE + 0x2000 {
                return None;
            }
            let pdpt = e[512 + ((va >> 30) & 511) as usize];
            if pdpt & 1 == 0 || pdpt & !0xfff != BASE + 0x3000 {
                return None;
            }
            let pd = e[1024 + ((va >> 21) & 511) as usize];
            (pd & 0x81 == 0x81).then_some((pd & !0x1f_ffff & !(1 << 63)) | (va & 0x1f_ffff))
        };
        for va in [
            BASE,
            BASE + CODE_OFFSET + 0x85,
            BASE + (16 << 20) - 1,
            BASE - 0x1000,
        ] {
            assert_eq!(walk(va), Some(va), "{va:#x}");
        }
        assert_eq!(walk(0x8000_0000), None, "the next GiB is not mapped");
    }

    #[test]
    fn the_programs_call_with_the_transport_and_point_at_the_partition() {
        for t in [Transport::Vmmcall, Transport::Vmcall] {
            let call = call_bytes(t);
            let hello = code(Program::Hello, BASE, t);
            let calls = hello.windows(3).filter(|w| *w == call).count();
            assert_eq!(calls, 2, "console_write and partition_exit");
            let msg = (BASE + CODE_OFFSET + 0x80).to_le_bytes();
            assert!(hello.windows(8).any(|w| w == msg));
            assert_eq!(&hello[0x80..0x80 + HELLO.len()], HELLO.as_bytes());
            let spin = code(Program::Spin, BASE, t);
            assert_eq!(
                &spin[..10],
                &[0xb8, 4, 0, 0, 0, call[0], call[1], call[2], 0xeb, 0xf6]
            );
            let fault = code(Program::Fault, BASE, t);
            assert_eq!(&fault[2..10], &(BASE - 0x1000).to_le_bytes());
        }
    }

    #[test]
    fn the_start_state_is_one_the_hypervisor_accepts() {
        let s = start_state(BASE, 0x600d);
        assert_eq!(StartState::decode(&s.encode()), Ok(s));
        assert_eq!(s.cr3 % 4096, 0);
        // The selectors name the code and data descriptors.
        assert_eq!(GDT[(s.code_selector / 8) as usize] >> 40 & 0xff, 0x9a);
        assert_eq!(GDT[(s.data_selector / 8) as usize] >> 40 & 0xff, 0x92);
    }
}
