//! An executor for hyper on ustack: the sockets are `!Send`, so hyper's
//! background tasks (an HTTP/2 connection's streams) run on the local set.

use std::future::Future;

/// hyper's executor for tasks on the current thread's
/// [`tokio::task::LocalSet`] (`spawn_local`): pass it to hyper's HTTP/2
/// builders (`hyper::server::conn::http2::Builder::new(LocalExec)`,
/// `hyper::client::conn::http2::handshake(LocalExec, io)`) or to
/// `hyper_util`'s `auto::Builder`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}
