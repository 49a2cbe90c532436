// The Fast documentation's Node.js example (getToken, then SyncData setCustomer), run against this gateway.
// Usage: npm install && GATEWAY_URL=http://127.0.0.1:8000 GATEWAY_USER=demo GATEWAY_PASSWORD=... node fast_client.js
//
// One line differs from the documentation: it returns `response.data.token`, the whole token object, and
// then sends it as the Authorization header, which axios turns into the text "[object Object]" (no server
// can authenticate that). The access token is `response.data.token.accesstoken`, as the documentation's
// C# example reads it.
const axios = require('axios');

const baseUrl = process.env.GATEWAY_URL || 'http://127.0.0.1:8000';

// Obtain token
async function getToken() {
  try {
    const response = await axios.post(`${baseUrl}/api/getToken`, {
      username: process.env.GATEWAY_USER || 'demo',
      password: process.env.GATEWAY_PASSWORD || 'your_password'
    });
    return response.data.token.accesstoken;
  } catch (error) {
    console.error('Error obtaining token:', error.response ? error.response.data : error.message);
    throw error;
  }
}

// Use token to call API
async function callApi() {
  const token = await getToken();

  try {
    const response = await axios.post(`${baseUrl}/api/SyncData`,
      { form: 'setCustomer', data: [{ CustomerCode: 'KH001', CustomerName: 'Alpha Trading', status: '1' }] },
      { headers: { Authorization: token } }
    );
    return response.data;
  } catch (error) {
    console.error('Error calling API:', error.response ? error.response.data : error.message);
    throw error;
  }
}

callApi().then((data) => console.log(JSON.stringify(data))).catch(() => process.exit(1));
