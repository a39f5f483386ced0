//! The one place bytes are turned into values and back: bincode 2 through serde.
//!
//! bincode is no longer maintained; keeping every call to it here, behind [`encode`] and
//! [`decode`], means a later format version can switch to another encoding by adding a
//! migration step rather than touching the store or the network code.
//!
//! Every decode is bounded by [`MAX_VALUE`] and must consume its input exactly, so a corrupt
//! or hostile value is an error, never an allocation of whatever size it claims.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest encoded value accepted, in bytes. A record is a few hundred bytes; a client ID
/// is bounded by the line length limit, which is far below this.
pub const MAX_VALUE: usize = 1 << 20;

/// Why a value could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot decode value: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("cannot encode value: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("value has {0} trailing bytes")]
    Trailing(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_VALUE>()
}

/// Encodes a value. Only fails for values bincode cannot represent, which no store type is.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    // Room for a whole record up front: growing the buffer while encoding cost more than
    // the encoding itself.
    let mut out = Vec::with_capacity(256);
    bincode::serde::encode_into_std_write(value, &mut out, config())?;
    Ok(out)
}

/// Decodes a value that must fill `bytes` exactly.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

/// Decodes a value from the start of `bytes`, ignoring what follows: for reading the leading
/// fields of a record without decoding the rest.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, _) = bincode::serde::decode_from_slice(bytes, config())?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_trailing_bytes() {
        let v: (String, u64) = ("kiwi".into(), 7);
        let mut bytes = encode(&v).unwrap();
        assert_eq!(decode::<(String, u64)>(&bytes).unwrap(), v);
        bytes.push(0);
        assert!(matches!(
            decode::<(String, u64)>(&bytes),
            Err(CodecError::Trailing(1))
        ));
    }

    #[test]
    fn a_huge_claimed_length_is_refused_without_allocating_it() {
        // A varint length prefix claiming u64::MAX bytes of string.
        let hostile = [0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(decode::<String>(&hostile).is_err());
    }
}
