//! Model calls (400–403): load, unload, list, info.

use crate::ring::codec::{List, Payload, Reader, Writer};
use crate::ring::{MAX_LIST, MAX_NAME};
use crate::status::Status;

/// `keep_alive_secs` value: keep the model loaded until unloaded.
pub const KEEP_ALIVE_FOREVER: i64 = -1;

/// `ai_model_load`: load `name` (or refresh its keep-alive if loaded).
///
/// `keep_alive_secs`: -1 keeps it until unloaded, 0 unloads it at once
/// (as Ollama's `keep_alive: 0`), n > 0 unloads it n seconds after its last
/// use. Values below -1 are `InvalidArgument`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelLoadRequest<'a> {
    pub name: &'a str,
    pub keep_alive_secs: i64,
}

impl<'a> Payload<'a> for ModelLoadRequest<'a> {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        if self.keep_alive_secs < KEEP_ALIVE_FOREVER {
            return Err(Status::InvalidArgument);
        }
        w.name(self.name, MAX_NAME)?;
        w.i64(self.keep_alive_secs);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        let name = r.name(MAX_NAME)?;
        let keep_alive_secs = r.i64()?;
        if keep_alive_secs < KEEP_ALIVE_FOREVER {
            return Err(Status::InvalidArgument);
        }
        Ok(ModelLoadRequest {
            name,
            keep_alive_secs,
        })
    }
}

/// Reply to `ai_model_load`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelLoadReply {
    /// Memory the loaded model holds.
    pub size_bytes: u64,
    /// Time spent loading; 0 when it was loaded already.
    pub load_duration_ns: u64,
}

impl<'a> Payload<'a> for ModelLoadReply {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.u64(self.size_bytes);
        w.u64(self.load_duration_ns);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(ModelLoadReply {
            size_bytes: r.u64()?,
            load_duration_ns: r.u64()?,
        })
    }
}

/// A request naming one model (`ai_model_unload`, `ai_model_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelName<'a> {
    pub name: &'a str,
}

impl<'a> Payload<'a> for ModelName<'a> {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.name(self.name, MAX_NAME)
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(ModelName {
            name: r.name(MAX_NAME)?,
        })
    }
}

/// `ai_model_unload` request.
pub type ModelUnloadRequest<'a> = ModelName<'a>;
/// `ai_model_info` request.
pub type ModelInfoRequest<'a> = ModelName<'a>;

/// Reply to `ai_model_unload`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelUnloadReply {
    /// Whether the model was loaded before the call.
    pub was_loaded: bool,
}

impl<'a> Payload<'a> for ModelUnloadReply {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.bool(self.was_loaded);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(ModelUnloadReply {
            was_loaded: r.bool()?,
        })
    }
}

/// `ai_model_list`: a page of the installed models, from index `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelListRequest {
    pub start: u32,
    /// 1..=256.
    pub max_entries: u16,
}

impl<'a> Payload<'a> for ModelListRequest {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        check_page(self.max_entries)?;
        w.u32(self.start);
        w.u16(self.max_entries);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        let start = r.u32()?;
        let max_entries = r.u16()?;
        check_page(max_entries)?;
        Ok(ModelListRequest { start, max_entries })
    }
}

fn check_page(max_entries: u16) -> Result<(), Status> {
    match max_entries as usize {
        0 => Err(Status::InvalidArgument),
        n if n > MAX_LIST => Err(Status::LimitExceeded),
        _ => Ok(()),
    }
}

/// One installed model in an `ai_model_list` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelEntry<'a> {
    pub name: &'a str,
    /// Size of the model file.
    pub size_bytes: u64,
    pub loaded: bool,
    /// For example `llama`; may be empty when unknown.
    pub family: &'a str,
    /// For example `8.0B`; may be empty.
    pub parameter_size: &'a str,
    /// For example `Q4_K_M`; may be empty.
    pub quantization: &'a str,
}

impl<'a> Payload<'a> for ModelEntry<'a> {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.name(self.name, MAX_NAME)?;
        w.u64(self.size_bytes);
        w.bool(self.loaded);
        w.str(self.family, MAX_NAME)?;
        w.str(self.parameter_size, MAX_NAME)?;
        w.str(self.quantization, MAX_NAME)
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(ModelEntry {
            name: r.name(MAX_NAME)?,
            size_bytes: r.u64()?,
            loaded: r.bool()?,
            family: r.str(MAX_NAME)?,
            parameter_size: r.str(MAX_NAME)?,
            quantization: r.str(MAX_NAME)?,
        })
    }
}

/// Reply to `ai_model_list`: `total` models installed, `entries` from the
/// requested start (no more than asked for).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelListReply<'a> {
    pub total: u32,
    pub entries: List<'a, ModelEntry<'a>>,
}

impl<'a> Payload<'a> for ModelListReply<'a> {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.u32(self.total);
        self.entries.write(w, MAX_LIST)
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(ModelListReply {
            total: r.u32()?,
            entries: List::read(r, MAX_LIST)?,
        })
    }
}

/// Reply to `ai_model_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelInfo<'a> {
    pub name: &'a str,
    /// Model family (`llama`, `qwen2`, ...); may be empty.
    pub family: &'a str,
    /// File format (`gguf`); may be empty.
    pub format: &'a str,
    /// Human-readable parameter count (`8.0B`); may be empty.
    pub parameter_size: &'a str,
    /// Quantization level (`Q4_K_M`); may be empty.
    pub quantization: &'a str,
    /// Context window in tokens the model was trained for.
    pub context_length: u32,
    /// Embedding width; 0 when unknown.
    pub embedding_length: u32,
    pub size_bytes: u64,
    pub loaded: bool,
}

impl<'a> Payload<'a> for ModelInfo<'a> {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.name(self.name, MAX_NAME)?;
        w.str(self.family, MAX_NAME)?;
        w.str(self.format, MAX_NAME)?;
        w.str(self.parameter_size, MAX_NAME)?;
        w.str(self.quantization, MAX_NAME)?;
        w.u32(self.context_length);
        w.u32(self.embedding_length);
        w.u64(self.size_bytes);
        w.bool(self.loaded);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(ModelInfo {
            name: r.name(MAX_NAME)?,
            family: r.str(MAX_NAME)?,
            format: r.str(MAX_NAME)?,
            parameter_size: r.str(MAX_NAME)?,
            quantization: r.str(MAX_NAME)?,
            context_length: r.u32()?,
            embedding_length: r.u32()?,
            size_bytes: r.u64()?,
            loaded: r.bool()?,
        })
    }
}
