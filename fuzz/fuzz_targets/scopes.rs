//! Token scopes (`repository:ns/name:pull,push`, `registry:catalog:*`) as the token endpoint receives them:
//! never a panic; a parsed repository scope names a valid repository and only known actions.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let all = auth::scope::Scope::parse_all(s.split('\n'));
    for scope in &all {
        let access = scope.to_access();
        if access.kind == "repository" {
            assert!(access.name.parse::<names::RepositoryName>().is_ok(), "{access:?}");
        }
        for action in &access.actions {
            assert!(matches!(action.as_str(), "pull" | "push" | "delete" | "*"), "{access:?}");
        }
    }
});
