//! Call numbers, the groups they belong to, and the policy's group mask.

use core::fmt;
use core::ops::Range;

/// A call group: the unit of permission a policy grants a partition.
///
/// Numbers 0..200 are the partition's own calls (console), 200..400 the calls
/// that act on other partitions (management); each AI group owns a block of
/// 50. `management` includes `console`: a partition that manages others may
/// also print (ABI 1.4 split `console` off, so that granting output no longer
/// grants future cross-partition calls).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Group {
    Management = 0,
    Models = 1,
    Gpu = 2,
    Tensors = 3,
    Containers = 4,
    /// The partition's own console, description and counters (`console_write`,
    /// `partition_info`, `partition_stats`); since 1.4.
    Console = 5,
}

impl Group {
    pub const ALL: [Group; 6] = [
        Group::Management,
        Group::Models,
        Group::Gpu,
        Group::Tensors,
        Group::Containers,
        Group::Console,
    ];

    /// The block of call numbers reserved for this group (assigned or not).
    pub const fn range(self) -> Range<u64> {
        match self {
            Group::Console => 0..200,
            Group::Management => 200..400,
            Group::Models => 400..450,
            Group::Gpu => 450..500,
            Group::Tensors => 500..550,
            Group::Containers => 550..600,
        }
    }

    /// Lower-case name, as used in policy files and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Group::Management => "management",
            Group::Models => "models",
            Group::Gpu => "gpu",
            Group::Tensors => "tensors",
            Group::Containers => "containers",
            Group::Console => "console",
        }
    }

    /// Inverse of [`Group::name`] (exact, lower-case).
    pub fn from_name(name: &str) -> Option<Group> {
        Group::ALL.into_iter().find(|g| g.name() == name)
    }

    /// This group's bit in a [`GroupSet`].
    pub const fn bit(self) -> u32 {
        1 << self as u32
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The group whose block contains `number`, assigned or not; `None` at 600 and above.
pub const fn group_of(number: u64) -> Option<Group> {
    match number {
        0..200 => Some(Group::Console),
        200..400 => Some(Group::Management),
        400..450 => Some(Group::Models),
        450..500 => Some(Group::Gpu),
        500..550 => Some(Group::Tensors),
        550..600 => Some(Group::Containers),
        _ => None,
    }
}

/// Every assigned hypercall. The discriminant is the number passed in RAX.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u64)]
pub enum Hypercall {
    /// ABI version query and check.
    Version = 1,
    /// Write bytes to the partition's console.
    ConsoleWrite = 2,
    /// Copy the partition description into a guest buffer.
    PartitionInfo = 3,
    /// Give up the rest of the time slice.
    Yield = 4,
    /// Report a result code and stop the partition.
    PartitionExit = 5,
    /// Copy the partition's exit and hypercall counters into a guest buffer (since 1.2).
    PartitionStats = 6,

    /// Describe another partition (since 1.5).
    PartitionDescribe = 200,
    /// Copy bytes into a stopped managed partition's memory (since 1.5).
    PartitionLoad = 201,
    /// Start a managed partition's first CPU in 64-bit mode (since 1.5).
    PartitionStart = 202,
    /// Stop a managed partition (since 1.5).
    PartitionStop = 203,
    /// A managed partition's state and how its last run ended (since 1.5).
    PartitionState = 204,

    AiModelLoad = 400,
    AiModelUnload = 401,
    AiModelList = 402,
    AiModelInfo = 403,

    GpuAlloc = 450,
    GpuExec = 451,
    GpuSync = 452,
    CudaLaunch = 453,
    /// Since 1.3.
    GpuFree = 454,
    /// Since 1.3.
    GpuStatus = 455,

    TensorCreate = 500,
    TensorCompute = 501,
    TensorTransfer = 502,
    TensorStream = 503,
    /// Since 1.3.
    TensorFree = 504,
    /// Since 1.3.
    TensorOp = 505,
    /// Since 1.3.
    TensorFill = 506,

    ContainerCreate = 550,
    ContainerExec = 551,
    DockerApi = 552,
    K8sSchedule = 553,
}

impl Hypercall {
    /// All calls, in number order.
    pub const ALL: [Hypercall; 32] = [
        Hypercall::Version,
        Hypercall::ConsoleWrite,
        Hypercall::PartitionInfo,
        Hypercall::Yield,
        Hypercall::PartitionExit,
        Hypercall::PartitionStats,
        Hypercall::PartitionDescribe,
        Hypercall::PartitionLoad,
        Hypercall::PartitionStart,
        Hypercall::PartitionStop,
        Hypercall::PartitionState,
        Hypercall::AiModelLoad,
        Hypercall::AiModelUnload,
        Hypercall::AiModelList,
        Hypercall::AiModelInfo,
        Hypercall::GpuAlloc,
        Hypercall::GpuExec,
        Hypercall::GpuSync,
        Hypercall::CudaLaunch,
        Hypercall::GpuFree,
        Hypercall::GpuStatus,
        Hypercall::TensorCreate,
        Hypercall::TensorCompute,
        Hypercall::TensorTransfer,
        Hypercall::TensorStream,
        Hypercall::TensorFree,
        Hypercall::TensorOp,
        Hypercall::TensorFill,
        Hypercall::ContainerCreate,
        Hypercall::ContainerExec,
        Hypercall::DockerApi,
        Hypercall::K8sSchedule,
    ];

    /// The number passed in RAX.
    pub const fn number(self) -> u64 {
        self as u64
    }

    /// The call with this number; `None` for unassigned numbers.
    pub const fn from_number(number: u64) -> Option<Hypercall> {
        Some(match number {
            1 => Hypercall::Version,
            2 => Hypercall::ConsoleWrite,
            3 => Hypercall::PartitionInfo,
            4 => Hypercall::Yield,
            5 => Hypercall::PartitionExit,
            6 => Hypercall::PartitionStats,
            200 => Hypercall::PartitionDescribe,
            201 => Hypercall::PartitionLoad,
            202 => Hypercall::PartitionStart,
            203 => Hypercall::PartitionStop,
            204 => Hypercall::PartitionState,
            400 => Hypercall::AiModelLoad,
            401 => Hypercall::AiModelUnload,
            402 => Hypercall::AiModelList,
            403 => Hypercall::AiModelInfo,
            450 => Hypercall::GpuAlloc,
            451 => Hypercall::GpuExec,
            452 => Hypercall::GpuSync,
            453 => Hypercall::CudaLaunch,
            454 => Hypercall::GpuFree,
            455 => Hypercall::GpuStatus,
            500 => Hypercall::TensorCreate,
            501 => Hypercall::TensorCompute,
            502 => Hypercall::TensorTransfer,
            503 => Hypercall::TensorStream,
            504 => Hypercall::TensorFree,
            505 => Hypercall::TensorOp,
            506 => Hypercall::TensorFill,
            550 => Hypercall::ContainerCreate,
            551 => Hypercall::ContainerExec,
            552 => Hypercall::DockerApi,
            553 => Hypercall::K8sSchedule,
            _ => return None,
        })
    }

    /// The call's name for logs, as spelled in the specification.
    pub const fn name(self) -> &'static str {
        match self {
            Hypercall::Version => "version",
            Hypercall::ConsoleWrite => "console_write",
            Hypercall::PartitionInfo => "partition_info",
            Hypercall::Yield => "yield",
            Hypercall::PartitionExit => "partition_exit",
            Hypercall::PartitionStats => "partition_stats",
            Hypercall::PartitionDescribe => "partition_describe",
            Hypercall::PartitionLoad => "partition_load",
            Hypercall::PartitionStart => "partition_start",
            Hypercall::PartitionStop => "partition_stop",
            Hypercall::PartitionState => "partition_state",
            Hypercall::AiModelLoad => "ai_model_load",
            Hypercall::AiModelUnload => "ai_model_unload",
            Hypercall::AiModelList => "ai_model_list",
            Hypercall::AiModelInfo => "ai_model_info",
            Hypercall::GpuAlloc => "gpu_alloc",
            Hypercall::GpuExec => "gpu_exec",
            Hypercall::GpuSync => "gpu_sync",
            Hypercall::CudaLaunch => "cuda_launch",
            Hypercall::GpuFree => "gpu_free",
            Hypercall::GpuStatus => "gpu_status",
            Hypercall::TensorCreate => "tensor_create",
            Hypercall::TensorCompute => "tensor_compute",
            Hypercall::TensorTransfer => "tensor_transfer",
            Hypercall::TensorStream => "tensor_stream",
            Hypercall::TensorFree => "tensor_free",
            Hypercall::TensorOp => "tensor_op",
            Hypercall::TensorFill => "tensor_fill",
            Hypercall::ContainerCreate => "container_create",
            Hypercall::ContainerExec => "container_exec",
            Hypercall::DockerApi => "docker_api",
            Hypercall::K8sSchedule => "k8s_schedule",
        }
    }

    /// Inverse of [`Hypercall::name`].
    pub fn from_name(name: &str) -> Option<Hypercall> {
        Hypercall::ALL.into_iter().find(|c| c.name() == name)
    }

    pub const fn group(self) -> Group {
        match group_of(self as u64) {
            Some(g) => g,
            // Every discriminant is below 600; this arm is never taken.
            None => Group::Console,
        }
    }

    /// AI calls carry their request in a shared-memory ring descriptor.
    pub const fn uses_ring(self) -> bool {
        !matches!(self.group(), Group::Console | Group::Management)
    }

    /// Calls every partition may make whatever its policy says: they reveal
    /// nothing and cost nothing, and a partition must always be able to stop.
    pub const fn always_permitted(self) -> bool {
        matches!(
            self,
            Hypercall::Version | Hypercall::Yield | Hypercall::PartitionExit
        )
    }
}

impl fmt::Display for Hypercall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which groups a partition may call: one bit per [`Group`] (bit = discriminant).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct GroupSet(u32);

impl GroupSet {
    pub const EMPTY: GroupSet = GroupSet(0);
    pub const ALL: GroupSet = GroupSet(0x3f);

    /// The set with exactly these bits; `None` if a bit names no group.
    pub const fn from_bits(bits: u32) -> Option<GroupSet> {
        if bits & !Self::ALL.0 == 0 {
            Some(GroupSet(bits))
        } else {
            None
        }
    }

    /// The set with these bits, unknown bits dropped.
    pub const fn from_bits_truncate(bits: u32) -> GroupSet {
        GroupSet(bits & Self::ALL.0)
    }

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn contains(self, group: Group) -> bool {
        self.0 & group.bit() != 0
    }

    /// This set plus `group`.
    pub const fn with(self, group: Group) -> GroupSet {
        GroupSet(self.0 | group.bit())
    }

    /// This set minus `group`.
    pub const fn without(self, group: Group) -> GroupSet {
        GroupSet(self.0 & !group.bit())
    }

    pub fn insert(&mut self, group: Group) {
        *self = self.with(group);
    }

    pub fn remove(&mut self, group: Group) {
        *self = self.without(group);
    }

    pub const fn union(self, other: GroupSet) -> GroupSet {
        GroupSet(self.0 | other.0)
    }

    pub const fn intersection(self, other: GroupSet) -> GroupSet {
        GroupSet(self.0 & other.0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The groups in the set, in [`Group::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Group> {
        Group::ALL.into_iter().filter(move |g| self.contains(*g))
    }

    /// Whether a partition holding this set may make `call`: its group, or
    /// `management` for a `console` call (management includes console).
    pub const fn permits(self, call: Hypercall) -> bool {
        let group = call.group();
        call.always_permitted()
            || self.contains(group)
            || (matches!(group, Group::Console) && self.contains(Group::Management))
    }
}

impl FromIterator<Group> for GroupSet {
    fn from_iter<I: IntoIterator<Item = Group>>(iter: I) -> Self {
        iter.into_iter().fold(GroupSet::EMPTY, GroupSet::with)
    }
}

impl fmt::Debug for GroupSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_lie_in_their_group_block() {
        for call in Hypercall::ALL {
            assert_eq!(Hypercall::from_number(call.number()), Some(call));
            assert_eq!(Hypercall::from_name(call.name()), Some(call));
            assert!(call.group().range().contains(&call.number()), "{call}");
            assert_eq!(group_of(call.number()), Some(call.group()));
        }
    }

    #[test]
    fn spec_numbers_are_fixed() {
        assert_eq!(Hypercall::AiModelLoad.number(), 400);
        assert_eq!(Hypercall::AiModelInfo.number(), 403);
        assert_eq!(Hypercall::GpuAlloc.number(), 450);
        assert_eq!(Hypercall::CudaLaunch.number(), 453);
        assert_eq!(Hypercall::TensorCreate.number(), 500);
        assert_eq!(Hypercall::TensorStream.number(), 503);
        assert_eq!(Hypercall::GpuFree.number(), 454);
        assert_eq!(Hypercall::GpuStatus.number(), 455);
        assert_eq!(Hypercall::TensorFree.number(), 504);
        assert_eq!(Hypercall::TensorOp.number(), 505);
        assert_eq!(Hypercall::TensorFill.number(), 506);
        assert_eq!(Hypercall::ContainerCreate.number(), 550);
        assert_eq!(Hypercall::K8sSchedule.number(), 553);
        assert!(Hypercall::ALL
            .iter()
            .filter(|c| c.group() == Group::Console)
            .all(|c| c.number() < 200));
        // 1.5: the partition life-cycle calls open the management block.
        assert_eq!(Hypercall::PartitionDescribe.number(), 200);
        assert_eq!(Hypercall::PartitionState.number(), 204);
        assert_eq!(
            Hypercall::ALL
                .iter()
                .filter(|c| c.group() == Group::Management)
                .count(),
            5
        );
        assert_eq!(Hypercall::ALL.iter().filter(|c| c.uses_ring()).count(), 21);
    }

    #[test]
    fn unassigned_numbers_are_rejected() {
        for n in [
            0,
            7,
            199,
            205,
            399,
            404,
            449,
            456,
            507,
            554,
            599,
            600,
            u64::MAX,
        ] {
            assert_eq!(Hypercall::from_number(n), None, "{n}");
        }
        assert_eq!(group_of(199), Some(Group::Console));
        assert_eq!(group_of(200), Some(Group::Management));
        assert_eq!(group_of(399), Some(Group::Management));
        assert_eq!(group_of(449), Some(Group::Models));
        assert_eq!(group_of(450), Some(Group::Gpu));
        assert_eq!(group_of(600), None);
    }

    #[test]
    fn all_is_sorted_and_complete() {
        let mut prev = None;
        for call in Hypercall::ALL {
            assert!(prev < Some(call.number()));
            prev = Some(call.number());
        }
        let assigned = (0..1000).filter_map(Hypercall::from_number).count();
        assert_eq!(assigned, Hypercall::ALL.len());
    }

    #[test]
    fn group_names_round_trip() {
        for g in Group::ALL {
            assert_eq!(Group::from_name(g.name()), Some(g));
        }
        assert_eq!(Group::from_name("Models"), None);
    }

    #[test]
    fn group_set_operations() {
        let set: GroupSet = [Group::Models, Group::Gpu].into_iter().collect();
        assert!(set.contains(Group::Models) && set.contains(Group::Gpu));
        assert!(!set.contains(Group::Management));
        assert_eq!(set.bits(), 0b110);
        assert_eq!(GroupSet::from_bits(set.bits()), Some(set));
        assert_eq!(GroupSet::from_bits(0x40), None);
        assert_eq!(
            GroupSet::from_bits(0x20),
            Some(GroupSet::EMPTY.with(Group::Console))
        );
        assert_eq!(GroupSet::from_bits_truncate(0x46), set);
        assert_eq!(set.iter().collect::<Vec<_>>(), [Group::Models, Group::Gpu]);
        let mut m = set;
        m.remove(Group::Models);
        m.insert(Group::Containers);
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            [Group::Gpu, Group::Containers]
        );
        assert_eq!(set.union(m).bits(), 0b10110);
        assert_eq!(set.intersection(m), GroupSet::EMPTY.with(Group::Gpu));
        assert!(GroupSet::EMPTY.is_empty());
        assert_eq!(GroupSet::ALL.iter().count(), 6);
        assert_eq!(format!("{set:?}"), "{Models, Gpu}");
    }

    #[test]
    fn permission_follows_group_except_always_permitted_calls() {
        let models = GroupSet::EMPTY.with(Group::Models);
        assert!(models.permits(Hypercall::AiModelLoad));
        assert!(!models.permits(Hypercall::GpuAlloc));
        assert!(!models.permits(Hypercall::ConsoleWrite));
        assert!(!models.permits(Hypercall::PartitionInfo));
        assert!(!models.permits(Hypercall::PartitionStats));
        for call in [
            Hypercall::Version,
            Hypercall::Yield,
            Hypercall::PartitionExit,
        ] {
            assert!(GroupSet::EMPTY.permits(call));
        }
        for call in Hypercall::ALL {
            assert!(GroupSet::ALL.permits(call));
        }
    }

    /// ABI 1.4: `console` alone permits printing, the partition's description and its
    /// own counters and nothing else; `management` still permits them (it includes
    /// console, so policies written before 1.4 keep working); neither grants an AI call.
    #[test]
    fn console_is_split_from_management() {
        let console = GroupSet::EMPTY.with(Group::Console);
        let management = GroupSet::EMPTY.with(Group::Management);
        for set in [console, management] {
            assert!(set.permits(Hypercall::ConsoleWrite));
            assert!(set.permits(Hypercall::PartitionInfo));
            assert!(!set.permits(Hypercall::AiModelLoad));
        }
        assert_eq!(Hypercall::ConsoleWrite.group(), Group::Console);
        assert_eq!(Hypercall::PartitionInfo.group(), Group::Console);
        // Its own counters only: a console call by number and by what it reveals.
        assert_eq!(Hypercall::PartitionStats.group(), Group::Console);
        assert!(console.permits(Hypercall::PartitionStats));
        assert!(management.permits(Hypercall::PartitionStats));
        assert!(!Hypercall::ConsoleWrite.uses_ring());
        // 1.5: the calls on other partitions need management itself.
        for call in Hypercall::ALL
            .into_iter()
            .filter(|c| c.group() == Group::Management)
        {
            assert!(!console.permits(call), "{call}");
            assert!(management.permits(call), "{call}");
            assert!(!call.uses_ring(), "{call}");
        }
        assert_eq!(Group::Console.bit(), 1 << 5);
        assert_eq!(Group::from_name("console"), Some(Group::Console));
    }
}
