//! Container calls (550–553): create, exec, docker_api, k8s_schedule.

use crate::ring::codec::{List, Payload, Reader, Writer};
use crate::ring::{MAX_NAME, MAX_PAYLOAD_BLOB, MAX_TEXT, PAGE_SIZE};
use crate::status::Status;

/// Most CPUs one container may ask for.
pub const MAX_CONTAINER_CPUS: u32 = 256;
/// Most arguments `container_exec` takes.
pub const MAX_ARGS: usize = 32;

/// `container_create`: start a container from `image`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerCreateRequest<'a> {
    /// Image reference, for example `docker.io/library/alpine:3.20`.
    pub image: &'a str,
    /// Container name; empty lets the service choose one.
    pub name: &'a str,
    /// 1..=256.
    pub cpus: u32,
    /// Non-zero multiple of 4096.
    pub memory_bytes: u64,
}

impl ContainerCreateRequest<'_> {
    fn check(&self) -> Result<(), Status> {
        if self.cpus == 0 || self.memory_bytes == 0 {
            return Err(Status::InvalidArgument);
        }
        if !self.memory_bytes.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Status::InvalidArgument);
        }
        if self.cpus > MAX_CONTAINER_CPUS {
            return Err(Status::LimitExceeded);
        }
        Ok(())
    }
}

impl<'a> Payload<'a> for ContainerCreateRequest<'a> {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        self.check()?;
        w.name(self.image, MAX_TEXT)?;
        w.str(self.name, MAX_NAME)?;
        w.u32(self.cpus);
        w.u64(self.memory_bytes);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        let req = ContainerCreateRequest {
            image: r.name(MAX_TEXT)?,
            name: r.str(MAX_NAME)?,
            cpus: r.u32()?,
            memory_bytes: r.u64()?,
        };
        req.check()?;
        Ok(req)
    }
}

/// Reply to `container_create`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerCreateReply {
    /// Non-zero container handle.
    pub container: u64,
}

impl<'a> Payload<'a> for ContainerCreateReply {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.u64(self.container);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(ContainerCreateReply {
            container: r.u64()?,
        })
    }
}

/// `container_exec`: run `argv` (1..=32 arguments) in a container and wait
/// at most `timeout_ms` (0: no limit) for it to exit (`Busy` on timeout).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ContainerExecRequest<'a> {
    pub container: u64,
    pub timeout_ms: u32,
    pub argv: List<'a, &'a str>,
}

impl<'a> Payload<'a> for ContainerExecRequest<'a> {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        if self.argv.is_empty() {
            return Err(Status::InvalidArgument);
        }
        w.u64(self.container);
        w.u32(self.timeout_ms);
        self.argv.write(w, MAX_ARGS)
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        let req = ContainerExecRequest {
            container: r.u64()?,
            timeout_ms: r.u32()?,
            argv: List::read(r, MAX_ARGS)?,
        };
        if req.argv.is_empty() {
            return Err(Status::InvalidArgument);
        }
        Ok(req)
    }
}

/// Reply to `container_exec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerExecReply {
    pub exit_code: i32,
}

impl<'a> Payload<'a> for ContainerExecReply {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.i32(self.exit_code);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(ContainerExecReply {
            exit_code: r.i32()?,
        })
    }
}

wire_enum! {
    /// HTTP method of a `docker_api` request.
    pub enum HttpMethod {
        Get = 0,
        Head = 1,
        Post = 2,
        Put = 3,
        Delete = 4,
        Patch = 5,
    }
}

/// `docker_api`: one Docker Engine API request (the service decides which
/// endpoints it allows; others are `PermissionDenied`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DockerApiRequest<'a> {
    pub method: HttpMethod,
    /// Starts with `/`, for example `/v1.43/containers/json`.
    pub path: &'a str,
    pub body: &'a [u8],
}

impl<'a> Payload<'a> for DockerApiRequest<'a> {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        if !self.path.starts_with('/') {
            return Err(Status::InvalidArgument);
        }
        self.method.write(w)?;
        w.str(self.path, MAX_TEXT)?;
        w.blob(self.body, MAX_PAYLOAD_BLOB)
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        let req = DockerApiRequest {
            method: HttpMethod::read(r)?,
            path: r.str(MAX_TEXT)?,
            body: r.blob(MAX_PAYLOAD_BLOB)?,
        };
        if !req.path.starts_with('/') {
            return Err(Status::InvalidArgument);
        }
        Ok(req)
    }
}

/// Reply to `docker_api`: the HTTP status and body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DockerApiReply<'a> {
    pub http_status: u16,
    pub body: &'a [u8],
}

impl<'a> Payload<'a> for DockerApiReply<'a> {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.u16(self.http_status);
        w.blob(self.body, MAX_PAYLOAD_BLOB)
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(DockerApiReply {
            http_status: r.u16()?,
            body: r.blob(MAX_PAYLOAD_BLOB)?,
        })
    }
}

/// `k8s_schedule`: apply a workload manifest (YAML or JSON) in `namespace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct K8sScheduleRequest<'a> {
    pub namespace: &'a str,
    /// UTF-8 manifest, non-empty.
    pub manifest: &'a str,
}

impl<'a> Payload<'a> for K8sScheduleRequest<'a> {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        if self.manifest.is_empty() {
            return Err(Status::InvalidArgument);
        }
        w.name(self.namespace, MAX_NAME)?;
        w.blob(self.manifest.as_bytes(), MAX_PAYLOAD_BLOB)
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        let namespace = r.name(MAX_NAME)?;
        let manifest = r.blob(MAX_PAYLOAD_BLOB)?;
        let manifest = core::str::from_utf8(manifest).map_err(|_| Status::InvalidArgument)?;
        if manifest.is_empty() {
            return Err(Status::InvalidArgument);
        }
        Ok(K8sScheduleRequest {
            namespace,
            manifest,
        })
    }
}

/// Reply to `k8s_schedule`: the workload's UID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct K8sScheduleReply<'a> {
    pub uid: &'a str,
}

impl<'a> Payload<'a> for K8sScheduleReply<'a> {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.name(self.uid, MAX_NAME)
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(K8sScheduleReply {
            uid: r.name(MAX_NAME)?,
        })
    }
}
