//! The only place that turns protocol messages into bytes and back.
//!
//! A frame is a 4-byte big-endian payload length, then the payload: a 2-byte big-endian
//! protocol version followed by the bincode 2 encoding of a [`Message`]. The version is
//! outside the bincode part so that a peer speaking another version gets a clear
//! "unsupported version" instead of a confusing decode error.
//!
//! Decoding never trusts a length: a frame longer than the caller's limit is refused before
//! any allocation; bincode runs with a memory limit for strings and byte buffers; and every
//! collection in the protocol has a fixed ceiling checked while it is decoded (see
//! `bounded`), so a hostile count *inside* a frame is refused too. [`DecodeError::Incomplete`]
//! (wait for more bytes) is distinct from every "malformed" error (close the connection).
//!
//! bincode is unmaintained upstream (RUSTSEC-2025-0141); keeping it behind this module
//! means it can be swapped without touching anything else.

use crate::protocol::{Message, PROTOCOL_VERSION};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;
/// Bytes of the version that starts every payload.
const VERSION_LEN: usize = 2;
/// The largest frame a signal batch may use.
pub const MAX_BATCH_FRAME: usize = 4 * 1024 * 1024;
/// The largest frame on the control stream and during enrollment.
pub const MAX_CONTROL_FRAME: usize = 256 * 1024;
/// What bincode may claim in memory while decoding one frame, whatever it announces.
pub const DECODE_MEMORY_LIMIT: usize = 32 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_MEMORY_LIMIT>()
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot encode {message}: {source}")]
    Bincode {
        message: &'static str,
        source: bincode::error::EncodeError,
    },
    #[error("{message} frame is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        message: &'static str,
        size: usize,
        limit: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not an error yet: at least `needed` bytes in total are required.
    #[error("incomplete frame: {needed} bytes needed")]
    Incomplete { needed: usize },
    #[error("frame announces {announced} bytes, more than the limit of {limit}")]
    TooLarge { announced: usize, limit: usize },
    #[error("unsupported protocol version {got} (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion { got: u16 },
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl DecodeError {
    pub fn is_incomplete(&self) -> bool {
        matches!(self, Self::Incomplete { .. })
    }
}

/// Encodes `message` as one frame, refusing frames over `limit` bytes.
pub fn encode_frame(message: &Message, limit: usize) -> Result<Vec<u8>, EncodeError> {
    let mut frame = Vec::with_capacity(256);
    frame.extend_from_slice(&[0; HEADER_LEN]);
    frame.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    bincode::serde::encode_into_std_write(message, &mut frame, config()).map_err(|source| {
        EncodeError::Bincode {
            message: message.name(),
            source,
        }
    })?;
    let payload_len = frame.len() - HEADER_LEN;
    if payload_len > limit {
        return Err(EncodeError::TooLarge {
            message: message.name(),
            size: payload_len,
            limit,
        });
    }
    let announced = u32::try_from(payload_len).map_err(|_| EncodeError::TooLarge {
        message: message.name(),
        size: payload_len,
        limit,
    })?;
    frame[..HEADER_LEN].copy_from_slice(&announced.to_be_bytes());
    Ok(frame)
}

/// Reads the length prefix of a frame, refusing lengths over `limit`.
pub fn decode_header(header: [u8; HEADER_LEN], limit: usize) -> Result<usize, DecodeError> {
    let announced = u32::from_be_bytes(header) as usize;
    if announced > limit {
        return Err(DecodeError::TooLarge { announced, limit });
    }
    if announced < VERSION_LEN {
        return Err(DecodeError::Malformed(format!(
            "frame of {announced} bytes is too short for a version"
        )));
    }
    Ok(announced)
}

/// Decodes a payload (the bytes after the length prefix).
pub fn decode_payload(payload: &[u8]) -> Result<Message, DecodeError> {
    let (version, body) = payload
        .split_first_chunk::<VERSION_LEN>()
        .ok_or_else(|| DecodeError::Malformed("payload too short for a version".into()))?;
    let version = u16::from_be_bytes(*version);
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion { got: version });
    }
    let (message, used) = bincode::serde::decode_from_slice::<Message, _>(body, config())
        .map_err(|error| DecodeError::Malformed(error.to_string()))?;
    if used != body.len() {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes after the message",
            body.len() - used
        )));
    }
    Ok(message)
}

/// Decodes the first frame in `buffer`. Returns the message and the bytes it used, or
/// [`DecodeError::Incomplete`] when the buffer holds only part of a frame.
pub fn decode_frame(buffer: &[u8], limit: usize) -> Result<(Message, usize), DecodeError> {
    let Some((header, rest)) = buffer.split_first_chunk::<HEADER_LEN>() else {
        return Err(DecodeError::Incomplete { needed: HEADER_LEN });
    };
    let length = decode_header(*header, limit)?;
    if rest.len() < length {
        return Err(DecodeError::Incomplete {
            needed: HEADER_LEN + length,
        });
    }
    let message = decode_payload(&rest[..length])?;
    Ok((message, HEADER_LEN + length))
}

/// Why a frame could not be read from a stream.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("stream ended inside a frame")]
    Truncated,
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame. `Ok(None)` is a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> Result<Option<Message>, ReadError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match reader.read(&mut header[filled..]).await? {
            0 if filled == 0 => return Ok(None),
            0 => return Err(ReadError::Truncated),
            n => filled += n,
        }
    }
    let length = decode_header(header, limit)?;
    // Grow with what actually arrives: a peer that announces a large frame and stalls
    // holds no more memory than it has sent.
    let mut payload = Vec::with_capacity(length.min(64 * 1024));
    let read = (&mut *reader)
        .take(length as u64)
        .read_to_end(&mut payload)
        .await?;
    if read < length {
        return Err(ReadError::Truncated);
    }
    Ok(Some(decode_payload(&payload)?))
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &Message,
    limit: usize,
) -> Result<(), WriteError> {
    let frame = encode_frame(message, limit)?;
    writer.write_all(&frame).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Ack, Batch};
    use crate::signal::{IndicatorType, Severity, Signal, Timestamp};

    fn batch() -> Message {
        let signals = (0..3)
            .map(|i| {
                Signal::new("ssh_bruteforce", Severity::High, Timestamp(i))
                    .with_indicator(IndicatorType::Ip, "203.0.113.7")
                    .with_attribute("attempts", i)
            })
            .collect();
        Message::Batch(Batch { seq: 7, signals })
    }

    #[test]
    fn every_prefix_is_incomplete_and_the_whole_decodes() {
        let sent = batch();
        let frame = encode_frame(&sent, MAX_BATCH_FRAME).expect("encode");
        for cut in 0..frame.len() {
            let error = decode_frame(&frame[..cut], MAX_BATCH_FRAME).expect_err("prefix");
            assert!(error.is_incomplete(), "prefix {cut}: {error}");
        }
        let (message, used) = decode_frame(&frame, MAX_BATCH_FRAME).expect("decode");
        assert_eq!(message, sent);
        assert_eq!(used, frame.len());
    }

    #[test]
    fn huge_announced_length_is_refused_before_reading() {
        let mut frame = vec![0xff, 0xff, 0xff, 0xff];
        frame.extend_from_slice(&[0; 16]);
        assert_eq!(
            decode_frame(&frame, MAX_BATCH_FRAME),
            Err(DecodeError::TooLarge {
                announced: u32::MAX as usize,
                limit: MAX_BATCH_FRAME
            })
        );
    }

    #[test]
    fn other_versions_are_named() {
        let mut frame = encode_frame(
            &Message::Ack(Ack {
                seq: 1,
                accepted: 1,
                duplicates: 0,
                rejected: 0,
            }),
            64,
        )
        .expect("encode");
        frame[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(
            decode_frame(&frame, 64),
            Err(DecodeError::UnsupportedVersion { got: 9 })
        );
    }

    #[test]
    fn trailing_garbage_is_malformed() {
        let mut frame = encode_frame(&batch(), MAX_BATCH_FRAME).expect("encode");
        frame.push(0);
        let length = u32::from_be_bytes(frame[..4].try_into().expect("4 bytes")) + 1;
        frame[..4].copy_from_slice(&length.to_be_bytes());
        assert!(matches!(
            decode_frame(&frame, MAX_BATCH_FRAME),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_messages_are_not_encoded() {
        assert!(matches!(
            encode_frame(&batch(), 16),
            Err(EncodeError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn stream_helpers_tell_clean_end_from_truncation() {
        let sent = batch();
        let frame = encode_frame(&sent, MAX_BATCH_FRAME).expect("encode");
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        let mut reader = &two[..];
        assert_eq!(
            read_frame(&mut reader, MAX_BATCH_FRAME)
                .await
                .expect("first"),
            Some(sent.clone())
        );
        assert_eq!(
            read_frame(&mut reader, MAX_BATCH_FRAME)
                .await
                .expect("second"),
            Some(sent)
        );
        assert_eq!(
            read_frame(&mut reader, MAX_BATCH_FRAME).await.expect("end"),
            None
        );
        let mut cut = &frame[..frame.len() - 1];
        assert!(matches!(
            read_frame(&mut cut, MAX_BATCH_FRAME).await,
            Err(ReadError::Truncated)
        ));
    }
}
