//! The Todo API component: `POST/GET /todos`, `GET/PUT/PATCH/DELETE /todos/:id`.
//! Todos persist in the Dapr state store; each change emits `todo.created`,
//! `todo.updated`, `todo.completed` or `todo.deleted` through Dapr's transactional
//! outbox. Names come from Spin variables; see spin.toml.

mod store;

use dapr_http::Dapr;
use todo_domain::todo::{self as model, ApiError, Change, Shape, Todo};
use serde_json::Value;
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;
use store::{Failure, Store};

fn json_response(status: u16, body: &Value) -> Response {
    Response::builder().status(status).header("content-type", "application/json").body(body.to_string()).build()
}

fn error(e: &ApiError) -> Response {
    json_response(e.status, &e.body())
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
    Ok(Store { dapr: Dapr::new(variable("dapr_url")?, Some(token)), name: variable("state_store")? })
}

#[http_component]
async fn handle(req: Request) -> Response {
    let path = req.path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let result = match (req.method(), segments.as_slice()) {
        (Method::Get, ["todos"]) => list(&req).await,
        (Method::Post, ["todos"]) => create(&req).await,
        (Method::Get, ["todos", id]) => read(id).await,
        (Method::Put, ["todos", id]) => update(&req, id, Shape::Replace).await,
        (Method::Patch, ["todos", id]) => update(&req, id, Shape::Patch).await,
        (Method::Delete, ["todos", id]) => delete(&req, id).await,
        (_, ["todos"]) => Err(Failure::Api(ApiError::new(405, "method_not_allowed", "use GET or POST on /todos"))),
        (_, ["todos", _]) => Err(Failure::Api(ApiError::new(405, "method_not_allowed", "use GET, PUT, PATCH or DELETE on /todos/:id"))),
        _ => Err(Failure::Api(ApiError::new(404, "not_found", format!("no route for {path}")))),
    };
    result.unwrap_or_else(|f| {
        let e = f.to_api();
        if e.status >= 500 {
            eprintln!("todo-api: {} {}: {}", req.method(), path, e.message);
        }
        error(&e)
    })
}

fn if_match(req: &Request) -> Option<String> {
    req.header("if-match").and_then(|v| v.as_str()).map(str::to_owned)
}

async fn list(req: &Request) -> Result<Response, Failure> {
    let filter = model::parse_completed_filter(req.query())?;
    let todos: Vec<Todo> = store()?.list().await?.into_iter().filter(|t| filter.is_none_or(|f| t.completed == f)).collect();
    // Serialised from the struct (not a JSON map) so fields keep the order single todos have.
    Ok(Response::builder().status(200).header("content-type", "application/json").body(serde_json::to_string(&todos).unwrap_or_default()).build())
}

async fn read(id: &str) -> Result<Response, Failure> {
    let (todo, _) = store()?.get(id).await?.ok_or_else(|| ApiError::not_found(id))?;
    Ok(todo_response(200, &todo))
}

async fn create(req: &Request) -> Result<Response, Failure> {
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
}

async fn update(req: &Request, id: &str, shape: Shape) -> Result<Response, Failure> {
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
}

async fn delete(req: &Request, id: &str) -> Result<Response, Failure> {
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
}
