//! `auth`: the connection's token replaced with a fresh one of the same user, which moves
//! the connection's expiry.

use crate::connection::{Gone, Reader};
use crate::protocol::{ErrorCode, FrameError, ServerFrame};

impl Reader {
    /// Replaces the connection's token with a fresh one of the same user.
    pub(super) async fn reauthenticate(
        &mut self,
        token: String,
    ) -> Result<Result<(), FrameError>, Gone> {
        let verified = match self.hub.verifier.verify(&token).await {
            Ok(verified) => verified,
            Err(common::token::TokenError::KeysUnavailable(_)) => {
                return Ok(Err(FrameError::new(
                    ErrorCode::Unavailable,
                    "tokens cannot be verified right now; retry shortly",
                )));
            }
            Err(error) => {
                tracing::debug!(%error, "in-band token refused");
                return Ok(Err(FrameError::new(
                    ErrorCode::Unauthorized,
                    "the token is invalid or expired",
                )));
            }
        };
        if verified.user.id != self.session.user.id {
            return Ok(Err(FrameError::new(
                ErrorCode::Unauthorized,
                "the token belongs to another user",
            )));
        }
        self.session.token.set(token);
        self.session.expires_at = verified.expires_at;
        self.session.issued_at = verified.issued_at;
        self.send(ServerFrame::Authenticated {
            expires_at: verified.expires_at,
        })
        .await?;
        Ok(Ok(()))
    }
}
