//! The Todo API component: `POST/GET /todos`, `GET/PUT/PATCH/DELETE /todos/:id`.
//! Todos persist in the Dapr state store, one key each; each change commits with its
//! event (`todo.created`, `todo.updated`, `todo.completed`, `todo.deleted`) through
//! Dapr's transactional outbox. `GET /todos` reads the list pages the subscriber
//! projects from those events, a page at a time. Names come from Spin variables.

mod store;

use dapr_http::Dapr;
use serde_json::Value;
use spin_sdk::http::{Params, Request, Response, Router};
use spin_sdk::http_component;
use store::{Failure, Store};
use todo_domain::list;
use todo_domain::todo::{self as model, ApiError, Change, Shape, Todo};

fn json_response(status: u16, body: &Value) -> Response {
    Response::builder().status(status).header("content-type", "application/json").body(body.to_string()).build()
}

fn todo_response(status: u16, todo: &Todo) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("etag", todo.etag())
        .body(serde_json::to_string(todo).unwrap_or_default())
        .build()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn variable(name: &str) -> Result<String, ApiError> {
    spin_sdk::variables::get(name).map_err(|e| ApiError::new(500, "configuration", format!("Spin variable {name}: {e:?}")))
}

fn store() -> Result<Store, ApiError> {
    let token = variable("dapr_api_token")?;
    Ok(Store {
        dapr: Dapr::new(variable("dapr_url")?, Some(token)),
        name: variable("state_store")?,
        list_store: variable("activity_store")?,
        tombstone_ttl: todo_domain::todo::parse_ttl_seconds("tombstone_ttl_seconds", &variable("tombstone_ttl_seconds")?)
            .map_err(|e| ApiError::new(500, "configuration", e))?,
    })
}

/// Answers a handler's result, logging server-side failures.
fn answer(req_line: &str, r: Result<Response, Failure>) -> Response {
    r.unwrap_or_else(|f| {
        let e = f.to_api();
        if e.status >= 500 {
            eprintln!("todo-api: {req_line}: {}", e.message);
        }
        json_response(e.status, &e.body())
    })
}

fn not_allowed(allowed: &'static str) -> impl Fn(Request, Params) -> Response {
    move |_, _| {
        let e = ApiError::new(405, "method_not_allowed", format!("use {allowed}"));
        let mut r = json_response(405, &e.body());
        r.set_header("allow", allowed.replace(" or ", ", "));
        r
    }
}

#[http_component]
async fn handle(req: Request) -> Response {
    let mut router = Router::new();
    router.get_async("/todos", |req: Request, _: Params| async move { list(&req).await });
    router.post_async("/todos", |req: Request, _: Params| async move { create(&req).await });
    router.get_async("/todos/:id", |_: Request, p: Params| async move { read(p.get("id").unwrap_or_default()).await });
    router.put_async(
        "/todos/:id",
        |req: Request, p: Params| async move { update(&req, p.get("id").unwrap_or_default(), Shape::Replace).await },
    );
    router.patch_async(
        "/todos/:id",
        |req: Request, p: Params| async move { update(&req, p.get("id").unwrap_or_default(), Shape::Patch).await },
    );
    router.delete_async("/todos/:id", |req: Request, p: Params| async move { delete(&req, p.get("id").unwrap_or_default()).await });
    router.any("/todos", not_allowed("GET or POST"));
    router.any("/todos/:id", not_allowed("GET, PUT, PATCH or DELETE"));
    router.any("/...", |req: Request, _: Params| {
        json_response(404, &ApiError::new(404, "not_found", format!("no route for {}", req.path())).body())
    });
    router.handle_async(req).await
}

fn if_match(req: &Request) -> Option<String> {
    req.header("if-match").and_then(|v| v.as_str()).map(str::to_owned)
}

async fn list(req: &Request) -> Response {
    let result = async {
        let q = list::parse_list_query(req.query())?;
        let (todos, next) = store()?.list(&q).await?;
        // Serialised from structs (not a JSON map) so fields keep the order single todos have.
        #[derive(serde::Serialize)]
        struct ListPage {
            todos: Vec<Todo>,
            next_cursor: Option<String>,
        }
        let body = serde_json::to_string(&ListPage { todos, next_cursor: next.map(|c| c.encode()) }).unwrap_or_default();
        Ok(Response::builder().status(200).header("content-type", "application/json").body(body).build())
    };
    answer("GET /todos", result.await)
}

async fn read(id: &str) -> Response {
    let result = async {
        let (todo, _) = store()?.get(id).await?.ok_or_else(|| ApiError::not_found(id))?;
        Ok(todo_response(200, &todo))
    };
    answer("GET /todos/:id", result.await)
}

async fn create(req: &Request) -> Response {
    let result = async {
        let change = model::parse_change(req.body(), Shape::Create)?;
        let id = uuid::Uuid::new_v4().to_string();
        let at = now();
        let todo = Todo {
            id: id.clone(),
            title: change.title.clone().unwrap_or_default(),
            completed: change.completed.unwrap_or(false),
            created_at: at.clone(),
            updated_at: at.clone(),
            version: 1,
        };
        store()?.create(&todo, model::event(model::CREATED, &todo, &at)).await?;
        println!("todo-api: created {id}");
        let mut resp = todo_response(201, &todo);
        resp.set_header("location", format!("/todos/{id}"));
        Ok(resp)
    };
    answer("POST /todos", result.await)
}

async fn update(req: &Request, id: &str, shape: Shape) -> Response {
    let result = async {
        let change: Change = model::parse_change(req.body(), shape)?;
        let expected = if_match(req);
        let at = now();
        let updated = store()?
            .update(id, |todo| {
                model::check_if_match(expected.as_deref(), todo)?;
                Ok(model::apply(todo, &change, &at).map(|t| model::event(t, todo, &at)))
            })
            .await?;
        println!("todo-api: updated {id}");
        Ok(todo_response(200, &updated))
    };
    answer("PUT/PATCH /todos/:id", result.await)
}

async fn delete(req: &Request, id: &str) -> Response {
    let result = async {
        let expected = if_match(req);
        let at = now();
        store()?
            .delete(id, |todo| {
                model::check_if_match(expected.as_deref(), todo)?;
                Ok(model::event(model::DELETED, todo, &at))
            })
            .await?;
        println!("todo-api: deleted {id}");
        Ok(Response::builder().status(204).build())
    };
    answer("DELETE /todos/:id", result.await)
}
