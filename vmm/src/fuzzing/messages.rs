//! The `messages` target: `wisp_abi::msg`'s decoders on arbitrary bytes,
//! checked against its encoders.

use wisp_abi::msg::{self, DecodeError, Kind, HEADER_LEN, SEED_LEN};

use super::input::Input;

/// Checks `wisp_abi::msg` on arbitrary bytes: decoding never panics,
/// classifies errors correctly and agrees with the encoders.
pub fn messages(data: &[u8]) {
    check_decode(data);
    check_request(data);
    if let Ok((_, payload)) = msg::decode(data) {
        check_request(payload);
    }
    check_encode(data);
}

fn check_decode(data: &[u8]) {
    let field = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().expect("4 bytes"));
    match msg::decode(data) {
        Ok((kind, payload)) => {
            let len = field(4) as usize;
            assert_eq!(kind as u32, field(0));
            assert_eq!(payload.len(), len);
            assert!(std::ptr::eq(payload, &data[HEADER_LEN..HEADER_LEN + len]));
            let mut header = [0u8; HEADER_LEN];
            assert_eq!(msg::encode_header(&mut header, kind, len), HEADER_LEN + len);
            assert_eq!(header, data[..HEADER_LEN]);
        }
        Err(DecodeError::Truncated) => assert!(data.len() < HEADER_LEN),
        Err(DecodeError::UnknownKind(k)) => {
            assert_eq!(k, field(0));
            assert!(Kind::from_u32(k).is_none());
        }
        Err(DecodeError::BadLength(len)) => {
            assert_eq!(len, field(4));
            assert!(HEADER_LEN + len as usize > data.len());
        }
        Err(e) => panic!("decode: {e:?}"),
    }
}

fn check_request(payload: &[u8]) {
    let Ok(req) = msg::decode_request(payload) else {
        return;
    };
    let args: Vec<&[u8]> = req.args.iter().collect();
    let env: Vec<&[u8]> = req.env.iter().collect();
    for (list, items) in [(&req.args, &args), (&req.env, &env)] {
        assert_eq!(list.len(), items.len());
        assert_eq!(list.is_empty(), items.is_empty());
        assert_eq!(
            list.total_bytes(),
            items.iter().map(|s| s.len()).sum::<usize>()
        );
    }
    // The encoding is canonical: re-encoding gives the same bytes, and one
    // byte less does not fit.
    let mut buf = vec![0u8; payload.len()];
    let n = msg::encode_request(&mut buf, req.realtime_ns, &req.seed, &args, &env)
        .expect("a decoded request re-encodes in as many bytes");
    assert_eq!(&buf[..n], payload);
    msg::encode_request(&mut buf[..n - 1], 0, &req.seed, &args, &env).unwrap_err();
}

fn check_encode(data: &[u8]) {
    let mut input = Input(data);
    let cap = usize::from(input.u16());
    let realtime_ns = input.u64();
    let mut seed = [0u8; SEED_LEN];
    let s = input.bytes(SEED_LEN);
    seed[..s.len()].copy_from_slice(s);
    let list = |input: &mut Input<'_>| {
        let n = input.u8() % 8;
        (0..n)
            .map(|_| {
                let len = usize::from(input.u8() % 64);
                input.bytes(len).to_vec()
            })
            .collect::<Vec<_>>()
    };
    let args = list(&mut input);
    let env = list(&mut input);
    let need = 8 + SEED_LEN + 8 + args.iter().chain(&env).map(|s| 4 + s.len()).sum::<usize>();
    let mut buf = vec![0u8; cap];
    match msg::encode_request(&mut buf, realtime_ns, &seed, &args, &env) {
        Ok(n) => {
            assert_eq!(n, need);
            let req = msg::decode_request(&buf[..n]).expect("an encoded request decodes");
            assert_eq!((req.realtime_ns, req.seed), (realtime_ns, seed));
            assert!(req.args.iter().eq(args.iter().map(Vec::as_slice)));
            assert!(req.env.iter().eq(env.iter().map(Vec::as_slice)));
        }
        Err(msg::Overflow) => assert!(need > cap),
    }
}
