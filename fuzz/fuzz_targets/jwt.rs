//! JWT verification (`auth::jwt::KeyRing::verify`) with a real key ring: no input is ever accepted except the
//! token the ring signed itself (a forged, altered, `none`-algorithm or `jwk`/`jku`-carrying token is refused),
//! and nothing panics.
#![no_main]

use std::sync::{Arc, OnceLock};

use auth::jwt::{Claims, KeyRing, ISSUER};
use libfuzzer_sys::fuzz_target;
use storage_backends::MemoryStore;

struct Fixture {
    rt: tokio::runtime::Runtime,
    ring: KeyRing,
    token: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let ring = KeyRing::new(Arc::new(MemoryStore::new()));
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: "alice".into(),
            aud: "fuzz".into(),
            exp: now + 3600 * 24 * 365,
            nbf: now - 1,
            iat: now,
            jti: "j".into(),
            access: vec![],
            tid: None,
        };
        let token = rt.block_on(ring.sign(&claims)).unwrap();
        Fixture { rt, ring, token }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    // Half the inputs alter the real token (so that the fuzzer works on its structure), half are free text.
    let candidate = match data.split_first() {
        Some((0..=127, rest)) => {
            let mut t = f.token.clone().into_bytes();
            for (i, b) in rest.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0] as usize, c[1])) {
                let at = i % t.len();
                t[at] = b;
            }
            String::from_utf8_lossy(&t).into_owned()
        }
        _ => String::from_utf8_lossy(data).into_owned(),
    };
    let verdict = f.rt.block_on(f.ring.verify(&candidate, "fuzz"));
    if candidate != f.token {
        if let Ok(claims) = &verdict {
            // Base64 padding bits may vary without changing the decoded token; the claims must be the real ones.
            assert_eq!(claims.sub, "alice", "accepted a token the ring did not sign: {candidate}");
        }
    }
});
