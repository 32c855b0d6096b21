"""SPIFFE federation: the bundle endpoint this server serves (``endpoint``), the client
that fetches other trust domains' bundles (``client``) and the manager that keeps them
refreshed in the datastore (``manager``)."""
