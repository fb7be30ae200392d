//! Who is acting: the name of the caller on whose behalf a stream operation runs, set by the HTTP layer around a
//! request ([`acting_as`]) and written on the tag events the operation creates (`TagEvent::by`), so that a tag's
//! history says who pushed, tagged or imported each image. Work outside a request (the import controller's
//! scheduled imports) names itself the same way.

use std::future::Future;

tokio::task_local! {
    static ACTOR: String;
}

/// Runs `f` on behalf of `name`.
pub async fn acting_as<F: Future>(name: String, f: F) -> F::Output {
    ACTOR.scope(name, f).await
}

/// The name of whoever the running operation acts for, if a caller set one.
pub(crate) fn current() -> Option<String> {
    ACTOR.try_with(Clone::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scoped_to_the_future() {
        assert_eq!(current(), None);
        assert_eq!(acting_as("alice".into(), async { current() }).await.as_deref(), Some("alice"));
        assert_eq!(current(), None);
    }
}
