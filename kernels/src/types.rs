//! Element types, reduction operators, epilogues and the crate's error type.

use std::fmt;
use std::str::FromStr;

/// Errors returned by every kernel entry point. Bad input never panics.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// Two buffers of one call have different lengths.
    #[error("buffer length mismatch: {what} has {got} bytes, expected {expected}")]
    LengthMismatch {
        /// Which buffer (for example `srcs[2]` or `dsts[0]`).
        what: String,
        /// Its length in bytes.
        got: usize,
        /// The length of the first input, in bytes.
        expected: usize,
    },
    /// A byte buffer's length is not a multiple of the element size.
    #[error("{what} has {len} bytes, not a multiple of {dtype}'s {size}-byte element")]
    RaggedLength {
        /// Which buffer.
        what: String,
        /// Its length in bytes.
        len: usize,
        /// The data type of the call.
        dtype: DataType,
        /// The element size in bytes.
        size: usize,
    },
    /// `reduce_copy` needs at least one input.
    #[error("reduce_copy needs at least one input buffer")]
    NoInputs,
    /// `reduce_copy` needs at least one output.
    #[error("reduce_copy needs at least one output buffer")]
    NoOutputs,
    /// The combining operator of a `*_with` call must be Sum, Prod, Min or Max.
    #[error("{0} is not a combining operator (use ReduceOp::split to turn it into one plus an epilogue)")]
    NotCombining(ReduceOp),
    /// An epilogue that cannot be applied to this data type.
    #[error("invalid epilogue {epilogue:?} for {dtype}: {why}")]
    InvalidEpilogue {
        /// The epilogue.
        epilogue: Epilogue,
        /// The data type.
        dtype: DataType,
        /// Why it is invalid.
        why: &'static str,
    },
    /// A requested CPU backend is not supported by this processor or build.
    #[error("CPU backend {0} is not available on this machine")]
    BackendUnavailable(&'static str),
    /// A name that does not parse as a data type, operator or backend.
    #[error("unknown {kind} `{name}` (expected one of: {expected})")]
    UnknownName {
        /// What was being parsed.
        kind: &'static str,
        /// The text given.
        name: String,
        /// The accepted names.
        expected: &'static str,
    },
    /// The CUDA backend cannot be used (feature off, no driver, or no device).
    #[error("CUDA is not available: {0}")]
    CudaUnavailable(String),
    /// A CUDA driver call failed.
    #[error("CUDA error during {op}: {msg}")]
    Cuda {
        /// The operation that failed.
        op: &'static str,
        /// The driver's message.
        msg: String,
    },
}

/// The run-time element type of a dtype-erased (byte) buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// IEEE binary32.
    F32,
    /// IEEE binary64.
    F64,
    /// IEEE binary16 (`half::f16`).
    F16,
    /// bfloat16 (`half::bf16`).
    BF16,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 64-bit integer.
    U64,
}

impl DataType {
    /// Every data type, in declaration order.
    pub const ALL: [DataType; 10] = [
        DataType::F32,
        DataType::F64,
        DataType::F16,
        DataType::BF16,
        DataType::I8,
        DataType::U8,
        DataType::I32,
        DataType::U32,
        DataType::I64,
        DataType::U64,
    ];

    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DataType::I8 | DataType::U8 => 1,
            DataType::F16 | DataType::BF16 => 2,
            DataType::F32 | DataType::I32 | DataType::U32 => 4,
            DataType::F64 | DataType::I64 | DataType::U64 => 8,
        }
    }

    /// The nccl-tests name (`float`, `half`, `bfloat16`, `int32`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DataType::F32 => "float",
            DataType::F64 => "double",
            DataType::F16 => "half",
            DataType::BF16 => "bfloat16",
            DataType::I8 => "int8",
            DataType::U8 => "uint8",
            DataType::I32 => "int32",
            DataType::U32 => "uint32",
            DataType::I64 => "int64",
            DataType::U64 => "uint64",
        }
    }

    /// The short Rust-style name (`f32`, `bf16`, `i32`, ...).
    pub const fn short_name(self) -> &'static str {
        match self {
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::F16 => "f16",
            DataType::BF16 => "bf16",
            DataType::I8 => "i8",
            DataType::U8 => "u8",
            DataType::I32 => "i32",
            DataType::U32 => "u32",
            DataType::I64 => "i64",
            DataType::U64 => "u64",
        }
    }

    /// True for the four floating-point types.
    pub const fn is_float(self) -> bool {
        matches!(
            self,
            DataType::F32 | DataType::F64 | DataType::F16 | DataType::BF16
        )
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataType {
    type Err = KernelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let t = match lower.as_str() {
            "float" | "f32" | "float32" => DataType::F32,
            "double" | "f64" | "float64" => DataType::F64,
            "half" | "f16" | "float16" => DataType::F16,
            "bfloat16" | "bf16" => DataType::BF16,
            "int8" | "i8" | "char" => DataType::I8,
            "uint8" | "u8" => DataType::U8,
            "int32" | "i32" | "int" => DataType::I32,
            "uint32" | "u32" => DataType::U32,
            "int64" | "i64" => DataType::I64,
            "uint64" | "u64" => DataType::U64,
            _ => {
                return Err(KernelError::UnknownName {
                    kind: "data type",
                    name: s.to_string(),
                    expected: "float double half bfloat16 int8 uint8 int32 uint32 int64 uint64 \
                               (or f32 f64 f16 bf16 i8 u8 i32 u32 i64 u64)",
                })
            }
        };
        Ok(t)
    }
}

/// A reduction operator, as in NCCL's `ncclRedOp_t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReduceOp {
    /// Sum (integers wrap on overflow).
    Sum,
    /// Product (integers wrap on overflow).
    Prod,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Sum divided by the number of contributors (integers: truncating division of the
    /// wrapped sum, as NCCL does).
    Avg,
    /// Sum of every input multiplied by the scalar (applied once to the sum, which is the same
    /// value up to rounding; integers require an integral scalar and wrap).
    PreMulSum(f64),
}

impl ReduceOp {
    /// The operators without a parameter, plus `PreMulSum(0.5)`, for sweeps.
    pub const ALL: [ReduceOp; 6] = [
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Min,
        ReduceOp::Max,
        ReduceOp::Avg,
        ReduceOp::PreMulSum(0.5),
    ];

    /// The lower-case name (`sum`, `prod`, `min`, `max`, `avg`, `premulsum`).
    pub const fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Prod => "prod",
            ReduceOp::Min => "min",
            ReduceOp::Max => "max",
            ReduceOp::Avg => "avg",
            ReduceOp::PreMulSum(_) => "premulsum",
        }
    }

    /// Splits the operator into a combining operator (Sum, Prod, Min or Max) and the epilogue
    /// to apply once to the combined value of `contributors` inputs.
    ///
    /// `Avg` becomes `(Sum, Divide(contributors))`, `PreMulSum(s)` becomes `(Sum, Scale(s))`,
    /// every other operator is returned with `Epilogue::None`.
    pub fn split(self, contributors: usize) -> (ReduceOp, Epilogue) {
        match self {
            ReduceOp::Avg => (ReduceOp::Sum, Epilogue::Divide(contributors as u64)),
            ReduceOp::PreMulSum(s) => (ReduceOp::Sum, Epilogue::Scale(s)),
            op => (op, Epilogue::None),
        }
    }

    /// True for Sum, Prod, Min and Max.
    pub const fn is_combining(self) -> bool {
        matches!(
            self,
            ReduceOp::Sum | ReduceOp::Prod | ReduceOp::Min | ReduceOp::Max
        )
    }
}

impl fmt::Display for ReduceOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReduceOp::PreMulSum(s) => write!(f, "premulsum({s})"),
            op => f.write_str(op.name()),
        }
    }
}

impl FromStr for ReduceOp {
    type Err = KernelError;
    /// Accepts `sum prod min max avg premulsum`; `premulsum` alone means a scalar of 1, and
    /// `premulsum(0.5)` or `premulsum:0.5` sets it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let bad = || KernelError::UnknownName {
            kind: "reduction operator",
            name: s.to_string(),
            expected: "sum prod min max avg premulsum premulsum(SCALAR)",
        };
        let op = match lower.as_str() {
            "sum" => ReduceOp::Sum,
            "prod" => ReduceOp::Prod,
            "min" => ReduceOp::Min,
            "max" => ReduceOp::Max,
            "avg" => ReduceOp::Avg,
            "premulsum" => ReduceOp::PreMulSum(1.0),
            other => {
                let arg = other
                    .strip_prefix("premulsum(")
                    .and_then(|r| r.strip_suffix(')'))
                    .or_else(|| other.strip_prefix("premulsum:"))
                    .ok_or_else(bad)?;
                ReduceOp::PreMulSum(arg.trim().parse::<f64>().map_err(|_| bad())?)
            }
        };
        Ok(op)
    }
}

/// What to do with the combined value before it is stored, in the same pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Epilogue {
    /// Store the combined value.
    None,
    /// Multiply by the scalar (integers: the scalar must be integral; the product wraps).
    Scale(f64),
    /// Divide by the count (integers: truncating division).
    Divide(u64),
}

/// Internal operator codes used as const generic parameters, so each inner loop is
/// monomorphised for its operator.
pub(crate) mod code {
    pub const SUM: u8 = 0;
    pub const PROD: u8 = 1;
    pub const MIN: u8 = 2;
    pub const MAX: u8 = 3;

    pub const EPI_NONE: u8 = 0;
    pub const EPI_SCALE: u8 = 1;
    pub const EPI_DIVIDE: u8 = 2;
}

/// A validated epilogue with its constant in every form a kernel needs.
#[derive(Debug, Clone, Copy)]
#[doc(hidden)]
pub struct EpiParams {
    pub kind: u8,
    pub scale: f64,
    pub scale_int: i64,
    pub divisor: u64,
}

impl EpiParams {
    pub(crate) fn new(dtype: DataType, epilogue: Epilogue) -> Result<Self, KernelError> {
        let invalid = |why| KernelError::InvalidEpilogue {
            epilogue,
            dtype,
            why,
        };
        match epilogue {
            Epilogue::None => Ok(EpiParams {
                kind: code::EPI_NONE,
                scale: 1.0,
                scale_int: 1,
                divisor: 1,
            }),
            Epilogue::Scale(s) => {
                if !s.is_finite() {
                    return Err(invalid("the scalar is not finite"));
                }
                if !dtype.is_float() && (s.fract() != 0.0 || s.abs() > 9.2e18) {
                    return Err(invalid("integer types need an integral scalar"));
                }
                Ok(EpiParams {
                    kind: code::EPI_SCALE,
                    scale: s,
                    scale_int: s as i64,
                    divisor: 1,
                })
            }
            Epilogue::Divide(0) => Err(invalid("division by zero contributors")),
            Epilogue::Divide(n) => Ok(EpiParams {
                kind: code::EPI_DIVIDE,
                scale: 1.0,
                scale_int: 1,
                divisor: n,
            }),
        }
    }
}

/// Maps a combining `ReduceOp` to its internal code.
pub(crate) fn combine_code(op: ReduceOp) -> Result<u8, KernelError> {
    match op {
        ReduceOp::Sum => Ok(code::SUM),
        ReduceOp::Prod => Ok(code::PROD),
        ReduceOp::Min => Ok(code::MIN),
        ReduceOp::Max => Ok(code::MAX),
        other => Err(KernelError::NotCombining(other)),
    }
}
