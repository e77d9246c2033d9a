//! The record framing of the log and snapshot files: `length (u32 LE) | CRC-32 of the body
//! (u32 LE) | body`.

/// No record is larger (a longer length field is corruption, not a record).
pub const MAX_RECORD: usize = 256 << 20;

pub fn encode(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The first record of `bytes` and how many bytes it took, or why there is none.
pub fn decode(bytes: &[u8]) -> Result<(&[u8], usize), String> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let (Some(len), Some(crc)) = (word(0), word(4)) else {
        return Err(format!("a record header is torn ({} bytes)", bytes.len()));
    };
    let len = len as usize;
    if len > MAX_RECORD {
        return Err(format!("a record claims {len} bytes"));
    }
    let Some(body) = bytes.get(8..8 + len) else {
        return Err(format!(
            "a record is torn ({} of {len} bytes)",
            bytes.len() - 8
        ));
    };
    if crc32fast::hash(body) != crc {
        return Err("a record's checksum does not match".into());
    }
    Ok((body, 8 + len))
}
