"""HTTP plumbing shared by every service's API: app factory, errors, auth, paging."""
