//! A real registry for tests: bound on 127.0.0.1:0 (the port is read back from the bound socket, never guessed),
//! served on its own thread with a fresh temporary data directory, stopped on drop.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use crate::config::{Config, DEFAULT_MAX_MANIFEST_BYTES};

/// A running registry. `TestRegistry::start()` and go.
pub struct TestRegistry {
    addr: SocketAddr,
    data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestRegistry {
    /// Starts a registry on a fresh temporary data directory.
    pub fn start() -> TestRegistry {
        let tmp = tempfile::tempdir().expect("temporary data directory");
        let dir = tmp.path().to_path_buf();
        let mut r = TestRegistry::start_in(&dir);
        r._tmp = Some(tmp);
        r
    }

    /// Starts a registry on `data_dir` (kept after the registry stops).
    pub fn start_in(data_dir: &Path) -> TestRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let config = Config {
            listen: addr,
            data_dir: data_dir.to_path_buf(),
            public_host: addr.to_string(),
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                let registry = crate::open(&config).expect("open registry");
                let server = crate::http::serve(registry, listener).expect("serve");
                tx.send(server.handle()).expect("hand back the server handle");
                let _ = server.await;
            });
        });
        let handle = rx.recv().expect("server started");
        TestRegistry { addr, data_dir: data_dir.to_path_buf(), _tmp: None, handle, thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`, as image references want it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        let _ = futures::executor::block_on(handle.stop(false));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
