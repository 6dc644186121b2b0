"""The HTTP edge: litestar app, middleware, controllers, OpenAPI, static pages."""
