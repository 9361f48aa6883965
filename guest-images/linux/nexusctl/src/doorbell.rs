//! Hypercalls from user space through the user-space doorbell (docs/abi.md, section 2.1):
//! map the doorbell page through `/dev/mem`, lock a buffer page, give the hypervisor its
//! guest-physical address from `/proc/self/pagemap`, ring, read the answer.

use std::io;

use nexus_abi::call::{PARTITION_INFO_MAX, PARTITION_STATS_MAX};
use nexus_abi::cpuid::Discovery;
use nexus_abi::manage::StateWord;
use nexus_abi::ring::{PartitionInfo, PartitionStats, Payload};
use nexus_abi::{Hypercall, HypercallArgs, Reply, Request, Status};

use crate::pagemap::{self, Frame};
use crate::sys::{DoorbellPage, Mapping};
use crate::{Error, PAGE_SIZE};

/// The partition's doorbell, mapped.
pub struct Doorbell {
    page: DoorbellPage,
    gpa: u64,
}

impl Doorbell {
    /// Maps the doorbell that `found` announces: `NoDoorbell` when there is none,
    /// `Permission` when the kernel refuses `/dev/mem` (not root, lockdown).
    pub fn open(found: &Discovery) -> Result<Doorbell, Error> {
        let gpa = found.info.user_doorbell().ok_or(Error::NoDoorbell)?;
        let page = DoorbellPage::open(gpa).map_err(|(what, source)| {
            let denied = matches!(source.raw_os_error(), Some(libc::EACCES | libc::EPERM));
            let what = format!("{what} (doorbell at {gpa:#x})");
            if denied {
                Error::Permission { what, source }
            } else {
                Error::system(what, source)
            }
        })?;
        Ok(Doorbell { page, gpa })
    }

    /// The doorbell's guest-physical address.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// Makes one call. Calls that name guest memory need guest-physical addresses of locked
    /// pages: use the helpers below rather than raw addresses.
    pub fn call(&self, args: &HypercallArgs) -> Reply {
        self.page.ring(args)
    }

    /// `partition_info` into a locked page; the encoded description (decode it with
    /// [`decode_partition_info`]).
    pub fn partition_info(&self) -> Result<Vec<u8>, Error> {
        self.answer_in_buffer(Hypercall::PartitionInfo, PARTITION_INFO_MAX, |gpa, len| {
            Request::PartitionInfo { gpa, len }
        })
    }

    /// `partition_stats` into a locked page; the encoded counters (decode them with
    /// [`decode_partition_stats`]).
    pub fn partition_stats(&self) -> Result<Vec<u8>, Error> {
        self.answer_in_buffer(
            Hypercall::PartitionStats,
            PARTITION_STATS_MAX,
            |gpa, len| Request::PartitionStats { gpa, len },
        )
    }

    /// `partition_describe(id)` (management) into a locked page; the encoded description
    /// of partition `id` (decode it with [`decode_partition_info`]). An id no partition has
    /// answers `Error::Call` with `NotFound`.
    pub fn partition_describe(&self, id: u32) -> Result<Vec<u8>, Error> {
        self.answer_in_buffer(
            Hypercall::PartitionDescribe,
            PARTITION_INFO_MAX,
            |gpa, len| Request::PartitionDescribe { id, gpa, len },
        )
    }

    /// `partition_state(id)` (management): the state word of managed partition `id`, or the
    /// status (`PermissionDenied` for a partition that is not managed).
    pub fn partition_state(&self, id: u32) -> Result<StateWord, Status> {
        let reply = self.call(&Request::PartitionState { id }.encode());
        let word = reply.result()?;
        // A word no hypervisor of this ABI sends is an incompatible answer.
        StateWord::from_packed(word).ok_or(Status::VersionMismatch)
    }

    /// A call that writes its answer into a buffer of at most `max` bytes: made with a locked
    /// page's guest-physical address; the bytes it wrote.
    fn answer_in_buffer(
        &self,
        call: Hypercall,
        max: u32,
        request: impl Fn(u64, u32) -> Request,
    ) -> Result<Vec<u8>, Error> {
        let buf = Mapping::locked_page()
            .map_err(|e| Error::system("cannot lock a buffer page in memory (mlock)", e))?;
        let before = buffer_frame(&buf)?;
        let gpa = before
            .address()
            .expect("buffer_frame answers present frames");
        let len = max.min(PAGE_SIZE as u32);
        let reply = self.call(&request(gpa, len).encode());
        // The kernel may migrate even a locked page; then the hypervisor wrote the old frame.
        let after = buffer_frame(&buf)?;
        if after != before {
            return Err(Error::system(
                format!(
                    "the buffer page moved from {gpa:#x} to {:#x} during the call; its answer \
                     is lost, try again",
                    after.address().unwrap_or(0)
                ),
                io::Error::other("page migrated"),
            ));
        }
        let written = answer_len(call, reply, len)?;
        Ok(buf.read_volatile(written))
    }
}

/// The frame behind `buf`: present with a known number, or why not.
fn buffer_frame(buf: &Mapping) -> Result<Frame, Error> {
    let frame = pagemap::frame_of(buf.addr())
        .map_err(|e| Error::system("cannot read /proc/self/pagemap", e))?;
    match frame {
        Frame::Present(_) => Ok(frame),
        Frame::Hidden => Err(Error::Permission {
            what: "cannot learn the buffer's guest-physical address: /proc/self/pagemap hides \
                   frame numbers"
                .into(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        }),
        Frame::Swapped | Frame::Absent => Err(Error::system(
            format!("the locked buffer page is not in memory ({frame:?})"),
            io::Error::other("page not present"),
        )),
    }
}

/// The length a successful call wrote (RDX), checked against the buffer it was given.
fn answer_len(call: Hypercall, reply: Reply, capacity: u32) -> Result<usize, Error> {
    match reply.status {
        Status::Success if reply.value <= capacity as u64 => Ok(reply.value as usize),
        Status::Success => Err(Error::Incompatible {
            what: "it answered a length longer than the buffer it was given",
            status: Status::InvalidArgument,
        }),
        status => Err(Error::Call {
            call,
            status,
            value: reply.value,
        }),
    }
}

/// Decodes what `partition_stats` wrote.
pub fn decode_partition_stats(bytes: &[u8]) -> Result<PartitionStats<'_>, Error> {
    PartitionStats::decode(bytes).map_err(|status| Error::Incompatible {
        what: "its partition_stats answer does not decode",
        status,
    })
}

/// Decodes what `partition_info` wrote.
pub fn decode_partition_info(bytes: &[u8]) -> Result<PartitionInfo<'_>, Error> {
    PartitionInfo::decode(bytes).map_err(|status| Error::Incompatible {
        what: "its partition_info answer does not decode",
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_lengths_are_checked_against_the_buffer() {
        let call = Hypercall::PartitionInfo;
        assert_eq!(answer_len(call, Reply::ok(120), 4096).unwrap(), 120);
        assert_eq!(answer_len(call, Reply::ok(4096), 4096).unwrap(), 4096);
        let e = answer_len(call, Reply::ok(4097), 4096).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::INCOMPATIBLE);
        let e = answer_len(
            call,
            Reply {
                status: Status::BufferTooSmall,
                value: 5000,
            },
            4096,
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::CALL_FAILED);
        assert_eq!(
            e.to_string(),
            "partition_info answered buffer too small (status -13, rdx 0x1388)"
        );
    }

    #[test]
    fn garbage_answers_do_not_decode() {
        for bytes in [&[][..], &[2, 0][..], &[1, 0, 0][..]] {
            let e = decode_partition_info(bytes).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::INCOMPATIBLE, "{e}");
            let e = decode_partition_stats(bytes).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::INCOMPATIBLE, "{e}");
        }
    }

    #[test]
    fn a_locked_buffer_page_is_present() {
        // mlock needs RLIMIT_MEMLOCK >= one page, which every Linux default grants.
        let page = Mapping::locked_page().expect("mlock of one page");
        let frame = pagemap::frame_of(page.addr()).unwrap();
        assert!(
            matches!(frame, Frame::Present(_) | Frame::Hidden),
            "{frame:?}"
        );
        assert_eq!(page.read_volatile(8), [0u8; 8]);
    }
}
