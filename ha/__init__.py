"""Director high availability: heartbeat peer protocol, VIP ownership, announcements."""
