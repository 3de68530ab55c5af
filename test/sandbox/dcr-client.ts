// A client's side of the sandbox's DCR, for the sandbox's own tests: register
// a made-up statement and get a token, over HTTP.
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import type { Sandbox } from '../../src/sandbox/server.js'
import type { RawResponse } from '../helpers/app.js'

export async function post (url: string, path: string, body: string, contentType: string): Promise<RawResponse> {
  const response = await fetch(`${url}${path}`, { method: 'POST', body, headers: { 'content-type': contentType } })
  const buffer = Buffer.from(await response.arrayBuffer())
  const text = buffer.toString('utf8')
  return { status: response.status, headers: Object.fromEntries(response.headers), body: buffer, text, json: () => JSON.parse(text) }
}

export async function register (sandbox: Sandbox): Promise<{ client_id: string, client_secret: string }> {
  return (await post(sandbox.authUrl, '/o/client/register', JSON.stringify({ software_statement: makeSoftwareStatement() }), 'application/json')).json()
}

export async function tokenFor (sandbox: Sandbox): Promise<string> {
  const client = await register(sandbox)
  const form = new URLSearchParams({ grant_type: 'client_credentials', ...client }).toString()
  return (await post(sandbox.authUrl, '/o/client/token', form, 'application/x-www-form-urlencoded')).json().access_token
}
